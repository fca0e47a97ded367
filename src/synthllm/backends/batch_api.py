"""OpenAI Batch API mode of :class:`~synthllm.backends.openai_http.OpenAIBackend`.

Requests are written as JSONL whose ``custom_id`` is the request's cache key and split into
*shards* that respect OpenAI's limits (``batch_max_requests`` per batch, ``batch_max_bytes`` per
input file); a shard is submitted only while the batches in flight hold at most
``batch_max_enqueued_tokens`` (prompt tokens + output caps), so a 200k-request run queues itself
instead of being rejected. Batches are polled every ``batch_poll_s`` under one progress bar and
mapped back by ``custom_id``. Items that failed retryably (429, 5xx, expired, missing from the
output) are resubmitted in new batches, at most ``max_retries`` times; the rest end as error
results. Only the first base URL is used.

Each batch id is written to its own state file in ``state_dir`` (beside the request cache) as soon as
the batch is created, with the keys it answers. A killed process re-attaches on the next run to
every unfinished batch whose keys are all still missing, and shards only the rest, so no request is
paid for twice. A state file is removed once every answer of its batch has been handed to the caller
(and so cached). This module does not cache, price or parse answers; the backend and runner do. Answers come
back with the raw record the online path builds, so the cache holds the same thing either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import openai
from tqdm.auto import tqdm

from synthllm.backends.base import Request, Result
from synthllm.backends.http_errors import Failure, is_retryable
from synthllm.estimate import approx_tokens

if TYPE_CHECKING:
    from synthllm.backends.openai_http import OpenAIBackend

TERMINAL = ("completed", "failed", "expired", "cancelled")
Outcome = tuple[dict | None, str | None, bool]  # (response body, error, retryable)


def _state_path(state_dir: Path, keys: Sequence[str]) -> Path:
    return state_dir / f"batch-{hashlib.sha256(''.join(sorted(keys)).encode()).hexdigest()[:16]}.json"


@dataclass
class Shard:
    keys: list[str]
    tokens: int
    path: Path | None = None
    batch_id: str | None = None


def _attached(state_dir: Path, identity: str, missing: set[str]) -> list[Shard]:
    """Earlier, unfinished batches of this backend whose keys are all still missing."""
    found = []
    for path in sorted(state_dir.glob("batch-*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written file from a kill during the write: that batch is lost
        keys = state.get("keys", ())
        if state.get("identity") == identity and keys and set(keys) <= missing:
            found.append(Shard(list(keys), int(state.get("tokens", 0)), path, state["batch_id"]))
            missing = missing - set(keys)
    return found


def _line(backend: OpenAIBackend, key: str, request: Request) -> bytes:
    return (
        json.dumps(
            {"custom_id": key, "method": "POST", "url": backend.url_path, "body": backend.body(request)},
            ensure_ascii=False,
        )
        + "\n"
    ).encode("utf-8")


def plan_shards(
    items: Sequence[tuple[str, int, int]], max_requests: int, max_bytes: int, max_tokens: int | None
) -> list[Shard]:
    """Consecutive shards of (key, line bytes, tokens) items within every per-batch limit (a single
    item over a limit gets a shard of its own, which the API will judge)."""
    shards, keys, size, tokens = [], [], 0, 0
    for key, nbytes, ntokens in items:
        if keys and (
            len(keys) >= max_requests
            or size + nbytes > max_bytes
            or (max_tokens is not None and tokens + ntokens > max_tokens)
        ):
            shards.append(Shard(keys, tokens))
            keys, size, tokens = [], 0, 0
        keys.append(key)
        size, tokens = size + nbytes, tokens + ntokens
    return shards + ([Shard(keys, tokens)] if keys else [])


def _submit(
    client: openai.OpenAI, backend: OpenAIBackend, shard: Shard, lines: dict[str, bytes], state_dir: Path
) -> None:
    upload = client.files.create(
        file=("requests.jsonl", io.BytesIO(b"".join(lines[k] for k in shard.keys))), purpose="batch"
    )
    batch = client.batches.create(input_file_id=upload.id, endpoint=backend.url_path, completion_window="24h")
    shard.batch_id, shard.path = batch.id, _state_path(state_dir, shard.keys)
    tmp = shard.path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"identity": backend.identity, "batch_id": batch.id, "keys": shard.keys, "tokens": shard.tokens}),
        encoding="utf-8",
    )
    tmp.replace(shard.path)  # atomic: a kill leaves the old state or the new, never half


def _outcome(line: dict, batch_status: str) -> Outcome:
    response, error = line.get("response") or {}, line.get("error")
    status = response.get("status_code")
    if status == 200 and not error:
        return response.get("body"), None, False
    body = response.get("body") or {}
    detail = error or (body.get("error") if isinstance(body, dict) else body) or {}
    message = detail.get("message", detail) if isinstance(detail, dict) else detail
    code = detail.get("code") if isinstance(detail, dict) else None
    # a line the batch never ran (response null) is retried unless someone cancelled the batch
    never_ran = status is None and code != "batch_cancelled" and batch_status != "cancelled"
    retryable = never_ran or (status is not None and is_retryable(status)) or code == "batch_expired"
    return None, f"http {status or code}: {str(message)[:300]}", retryable


def _collect(client: openai.OpenAI, batch) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for file_id in (batch.error_file_id, batch.output_file_id):  # output last: it wins on overlap
        if file_id:
            for raw in client.files.content(file_id).text.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    outcomes[line["custom_id"]] = _outcome(line, batch.status)
    return outcomes


def _missing(batch) -> Outcome:
    """The outcome of a request the batch has no line for: retried unless the batch itself
    failed validation or was cancelled (resubmitting the same file would fail the same way)."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    detail = "; ".join(str(e.message) for e in errors[:3]) or "no answer for this request"
    return None, f"batch {batch.status}: {detail}", batch.status in ("completed", "expired")


def _tokens(request: Request) -> int:
    text = request.prompt or "".join(str(m.get("content") or "") for m in request.messages or ())
    return approx_tokens(text) + (1 if request.kind == "score" else request.max_new_tokens)


def run_batch(backend: OpenAIBackend, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
    params, state_dir = backend.params, backend.state_dir
    assert state_dir is not None  # checked when the backend is built
    state_dir.mkdir(parents=True, exist_ok=True)
    client = backend.sync_client()
    indices: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        indices.setdefault(request.cache_key(backend.identity), []).append(i)
    remaining = {key: requests[idxs[0]] for key, idxs in indices.items()}
    limit = params.batch_max_enqueued_tokens
    try:
        with tqdm(total=len(remaining), desc="batch API", unit="req") as bar:
            for round_ in range(params.max_retries + 1):
                active = _attached(state_dir, backend.identity, set(remaining))
                covered = {k for shard in active for k in shard.keys}
                lines = {k: _line(backend, k, r) for k, r in remaining.items() if k not in covered}
                queue = plan_shards(
                    [(k, len(lines[k]), _tokens(remaining[k])) for k in lines],
                    params.batch_max_requests,
                    params.batch_max_bytes,
                    limit,
                )
                retry: dict[str, Request] = {}
                while active or queue:
                    while queue and (
                        not active or limit is None or sum(s.tokens for s in active) + queue[0].tokens <= limit
                    ):
                        _submit(client, backend, queue[0], lines, state_dir)
                        active.append(queue.pop(0))
                    finished = []
                    for shard in active:
                        batch = client.batches.retrieve(shard.batch_id)
                        if batch.status in TERMINAL:
                            finished.append((shard, batch))
                    for shard, batch in finished:
                        active.remove(shard)
                        outcomes, missing = _collect(client, batch), _missing(batch)
                        for key in shard.keys:
                            body, error, retryable = outcomes.get(key, missing)
                            if error and retryable and round_ < params.max_retries:
                                retry[key] = remaining[key]
                                continue
                            result = (
                                Result(error=backend.redact(error), retryable=retryable)
                                if error
                                else _parse(backend, body, remaining[key])
                            )
                            for i in indices[key]:
                                yield i, result
                            bar.update(1)
                        shard.path.unlink(missing_ok=True)
                    if active and not finished:
                        time.sleep(params.batch_poll_s)
                remaining = retry
                if not remaining:
                    return
    finally:
        client.close()


def _parse(backend: OpenAIBackend, body: dict | None, request: Request) -> Result:
    try:
        return backend.parse(body, request, backend.record(body, backend.body(request)))
    except Failure as failure:  # answered, but unreadable: cached and failed as online, not resubmitted
        return Result(error=failure.reason, raw=backend.record(body, backend.body(request)))
