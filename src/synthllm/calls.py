"""The core's vocabulary for model calls: a :class:`Request`, and the :class:`Result` a backend
decodes from the raw response it received.

Three kinds of request exist, told apart by their fields:

* ``prompt`` or ``messages`` without ``choices``: write text (sample or greedy);
* ``prompt`` with ``choices``: score each choice as a continuation of the prompt;
* ``fields`` with ``choices``: a classifier's class probabilities for a (premise, hypothesis) pair.

A :class:`Result` is transport-level only: text, finish reason, usage, the log-probabilities the
model reported (per generated token with the server's top alternatives, or per scored choice) and
whether a JSON schema constrained the answer. What an answer *means* (a label, a confidence) is
decided by the task layer (:mod:`synthllm.annotation`), never here. ``raw`` is the response exactly
as received; it is what the request cache stores, so that a decoding or parsing fix re-derives
every row without a new request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


def stable_seed(*parts: object) -> int:
    """A 32-bit seed derived from its parts alone (per-sample seeds that do not depend on order)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


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
    # leading characters of ``prompt`` that other requests share (few-shot examples drawn once for
    # every row): a local backend computes their keys and values once and reads every row after them
    # (an HTTP server sees the whole prompt). It changes an answer only in rounding.
    shared_prefix: int = 0

    @property
    def kind(self) -> str:
        if self.fields is not None:
            return "classify"
        if self.choices is not None:
            return "score"
        return "chat" if self.messages is not None else "complete"

    def cache_key(self, backend_identity: str) -> str:
        """Hash of everything that changes the answer: the backend's identity (model, weights,
        precision, answer-shaping settings), rendered input, sampling parameters and the
        per-sample seed (n samples of one prompt are n entries)."""
        fields = asdict(self)
        if not self.shared_prefix:  # keys of requests without a shared prefix are those they always had
            del fields["shared_prefix"]
        payload = json.dumps({"backend": backend_identity, **fields}, ensure_ascii=False, sort_keys=True, default=list)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TokenChoice:
    """One token as the model spelled it (UTF-8 bytes; a token may hold part of a character)."""

    data: bytes
    logprob: float


@dataclass(frozen=True)
class TokenStep:
    """One generated position: the token chosen, and the alternatives the server reported there
    (its ``top_logprobs``; under a grammar these are the *unconstrained* distribution)."""

    chosen: TokenChoice
    alternatives: tuple[TokenChoice, ...] = ()


@dataclass(frozen=True)
class Result:
    text: str | None = None
    finish_reason: str | None = None
    choice_logprobs: dict[str, float] | None = None
    tokens: tuple[TokenStep, ...] | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    retryable: bool = False
    structured: bool = False
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def with_raw(self) -> Result:
        """This result carrying itself as its raw response (what a local backend caches)."""
        return replace(self, raw=self.to_json())

    def to_json(self) -> dict:
        """The result as plain JSON (local backends cache this as their raw response)."""
        data = asdict(self)
        data.pop("raw")
        if self.tokens is not None:
            data["tokens"] = [
                [[s.chosen.data.hex(), s.chosen.logprob], [[a.data.hex(), a.logprob] for a in s.alternatives]]
                for s in self.tokens
            ]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Result:
        data = dict(data)
        data.pop("raw", None)
        data["usage"] = Usage(**data.get("usage") or {})
        if data.get("tokens") is not None:
            data["tokens"] = tuple(
                TokenStep(
                    TokenChoice(bytes.fromhex(c[0]), c[1]), tuple(TokenChoice(bytes.fromhex(a[0]), a[1]) for a in alts)
                )
                for c, alts in data["tokens"]
            )
        return cls(**data)
