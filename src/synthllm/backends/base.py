"""The one interface behind every model that writes or labels text.

A backend turns a list of :class:`Request` into :class:`Result` objects, yielding each as soon as
it is done (in any order). Three kinds of request exist, told apart by their fields:

* ``prompt`` or ``messages`` without ``choices``: write text (sample or greedy);
* ``prompt`` with ``choices``: score each choice as a continuation (log-probabilities);
* ``fields`` with ``choices``: a classifier's class probabilities for a (premise, hypothesis) pair.

Backends implement only transport and model calls. Caching, batching, progress and usage/cost
accounting live once, in :mod:`synthllm.backends.runner`; retries and rate limits in the HTTP
backend, the only one that needs them. A backend declares which kinds it serves.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from synthllm.errors import BackendError


@dataclass(frozen=True)
class Request:
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    fields: tuple[tuple[str, str], ...] | None = None
    choices: tuple[str, ...] | None = None
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    json_schema: dict | None = None

    @property
    def kind(self) -> str:
        if self.fields is not None:
            return "classify"
        if self.choices is not None:
            return "score"
        return "chat" if self.messages is not None else "complete"

    def cache_key(self, backend_identity: str) -> str:
        """Hash of everything that changes the answer: model identity, rendered input, sampling
        parameters and the per-sample seed index (n samples of one prompt are n entries)."""
        payload = json.dumps({"backend": backend_identity, **asdict(self)},
                             ensure_ascii=False, sort_keys=True, default=list)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Result:
    text: str | None = None
    finish_reason: str | None = None
    choice_logprobs: dict[str, float] | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Result":
        data = dict(data)
        data["usage"] = Usage(**data.get("usage") or {})
        return cls(**data)


class Backend(ABC):
    """Subclasses set ``kinds`` and implement :meth:`run`."""

    kinds: frozenset[str] = frozenset()
    batch_size: int = 16

    @property
    @abstractmethod
    def identity(self) -> str:
        """Everything about the model and endpoint that changes answers (never a secret)."""

    @abstractmethod
    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Yield (index into requests, result) as each completes."""

    def check(self, requests: Sequence[Request]) -> None:
        kinds = {r.kind for r in requests} - self.kinds
        if kinds:
            raise BackendError(
                f"{type(self).__name__} ({self.identity}) cannot serve {sorted(kinds)} requests; "
                f"it serves {sorted(self.kinds)}"
            )

    def accounting(self) -> dict:
        """Keyword arguments for :func:`run_requests`: cost functions and budget cap, if priced."""
        return {}

    def close(self) -> None:
        """Release model memory or connections."""


def fingerprint(model_dir: Path) -> str:
    """Content hash of a saved model folder (weights, config, tokenizer)."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
