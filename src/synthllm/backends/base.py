"""The one interface behind every model that writes or labels text.

A backend turns a list of :class:`~synthllm.calls.Request` into :class:`~synthllm.calls.Result`
objects, yielding each as soon as it is done (in any order), and can :meth:`Backend.decode` the raw
response it stored in ``Result.raw`` back into the same Result. Backends implement only transport
and model calls. Caching (of raw responses), batching, progress, usage/cost accounting and the
budget live once, in :mod:`synthllm.backends.runner`; retries and rate limits in the HTTP backend,
the only one that needs them. A backend declares which request kinds it serves. Backends never
interpret an answer (labels and confidences belong to :mod:`synthllm.annotation`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import replace

from synthllm.calls import Request, Result, TokenChoice, TokenStep, Usage
from synthllm.errors import BackendError
from synthllm.io import fingerprint  # noqa: F401  (re-exported for the backends)

__all__ = ["Backend", "Request", "Result", "TokenChoice", "TokenStep", "Usage", "fingerprint"]


class Backend(ABC):
    """Subclasses set ``kinds`` and implement :meth:`run` (and :meth:`decode` if their raw
    responses are not ``Result.to_json()``)."""

    kinds: frozenset[str] = frozenset()
    batch_size: int = 16

    @property
    @abstractmethod
    def identity(self) -> str:
        """Everything about the model and endpoint that changes answers (never a secret)."""

    @abstractmethod
    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Yield (index into requests, result) as each completes."""

    def decode(self, raw: dict, request: Request) -> Result:
        """The Result for a raw response this backend stored (see ``Result.raw``). Local backends
        store their result as JSON; the HTTP backend stores the response body and re-parses it.
        The Result carries ``raw``: a cached result was answered."""
        return replace(Result.from_json(raw), raw=raw)

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

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release model memory or connections."""
