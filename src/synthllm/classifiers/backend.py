"""A trained pair classifier served through the backend interface (the "DeBERTa" annotator role).

It answers ``classify`` requests only: class probabilities for (premise, hypothesis) — or for the
text alone, in single-text tasks — returned as ``choice_logprobs`` over the label set it was trained
on. It writes no text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from synthllm.backends.base import Backend, Request, Result, fingerprint
from synthllm.classifiers import load_classifier


class ClassifierBackend(Backend):
    kinds = frozenset({"classify"})
    batch_size = 512

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self.classifier = load_classifier(self.model_dir)
        self._fingerprint = fingerprint(self.model_dir)

    @property
    def identity(self) -> str:
        return f"classifier:{self._fingerprint}"

    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        self.check(requests)
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            fields = [dict(r.fields or ()) for r in batch]
            proba = self.classifier.predict_proba([f["premise"] for f in fields], [f["hypothesis"] for f in fields])
            for j, row in enumerate(proba):
                scores = {lab: math.log(max(float(p), 1e-12)) for lab, p in zip(self.classifier.labels, row)}
                yield start + j, Result(choice_logprobs=scores, finish_reason="stop").with_raw()
