"""The backend behind one annotator config: its trained classifier, or its LLM backend. Kept out
of the package ``__init__`` so that stages which only generate text do not import the classifier."""

from __future__ import annotations

from pathlib import Path

from synthllm.backends import make_backend
from synthllm.backends.base import Backend
from synthllm.backends.classifier_annotator import ClassifierBackend
from synthllm.params import AnnotatorParams


def annotator_backend(cfg: AnnotatorParams, state_dir: Path | None = None) -> Backend:
    if cfg.kind == "classifier":
        return ClassifierBackend(cfg.model_dir)
    return make_backend(cfg.backend, state_dir=state_dir)
