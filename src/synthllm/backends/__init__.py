"""Backends: one interface (:class:`Backend`) for every model that writes or labels text.

Adding a backend is one file that implements ``identity`` and ``run``; :func:`make_backend` maps a
validated params section onto it. Heavy imports (torch, openai) happen only when a backend is built.
"""

from __future__ import annotations

from pathlib import Path

from synthllm.backends.base import Backend, Request, Result, Usage
from synthllm.backends.runner import RequestCache, RunStats, run_requests
from synthllm.params import OpenAIBackendParams, TransformersBackendParams

__all__ = ["Backend", "Request", "Result", "Usage", "RequestCache", "RunStats", "run_requests", "make_backend"]


def make_backend(params: TransformersBackendParams | OpenAIBackendParams, state_dir: Path | None = None) -> Backend:
    """``state_dir`` holds resumable state beside the request cache (OpenAI batch ids): an OpenAI
    backend with ``use_batch_api`` is the Batch API's (:mod:`synthllm.backends.batch_api`), else the
    online HTTP one (:mod:`synthllm.backends.openai_http`)."""
    if isinstance(params, TransformersBackendParams):
        from synthllm.backends.transformers_local import TransformersBackend

        return TransformersBackend(
            params.model_dir, dtype=params.dtype, batch_size=params.batch_size, threads=params.threads
        )
    if params.use_batch_api:
        from synthllm.backends.batch_api import BatchAPIBackend

        return BatchAPIBackend(params, state_dir=state_dir)
    from synthllm.backends.openai_http import OpenAIBackend

    return OpenAIBackend(params)
