"""SynthLLM: LLM-generated, LLM-annotated training data for low-resource classification tasks.

The package is a pure, typed core (``synthllm.*``) with thin DVC stage entry points in
``synthllm.stages``. Nothing in the core reads ``params.yaml`` or argv itself.
"""

__version__ = "0.1.0"
