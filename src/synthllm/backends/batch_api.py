"""The OpenAI Batch API as a backend: :class:`BatchAPIBackend`, which
:func:`~synthllm.backends.make_backend` builds when the OpenAI params say ``use_batch_api: true``.

Requests are written as JSONL whose ``custom_id`` is the request's cache key and split into
*shards* that respect OpenAI's limits (``batch_max_requests`` per batch, ``batch_max_bytes`` per
input file); a shard is submitted only while the batches in flight hold at most
``batch_max_enqueued_tokens`` (each request's :func:`~synthllm.backends.openai_wire.token_bound`, the
bound the budget cap prices), so a 200k-request run queues itself
instead of being rejected. Batches are polled every ``batch_poll_s`` under one progress bar and
mapped back by ``custom_id``. Items that failed retryably (429, 5xx, expired, missing from the
output) are resubmitted in new batches, at most ``max_retries`` times; the rest end as error
results. Only the first base URL is used.

Each batch id is written to its own state file in ``state_dir`` (beside the request cache) as soon as
the batch is created, with the keys it answers. A killed process re-attaches on the next run to
every unfinished batch whose keys are all still missing, and shards only the rest, so no request is
paid for twice. A state file is removed once every answer of its batch has been handed to the caller
(and so cached). This module does not cache or total costs (the runner does); bodies, parsing, identity
and prices are :mod:`synthllm.backends.openai_wire`'s, so answers come back with the raw record the
online backend builds and the cache holds the same thing either way. The ``openai`` SDK drives the
control calls (uploads, batches, polls).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import openai
from tqdm.auto import tqdm

from synthllm.backends import openai_wire
from synthllm.backends.base import Request, Result
from synthllm.backends.http_errors import Failure, is_retryable
from synthllm.backends.openai_wire import OpenAIProtocolBackend
from synthllm.errors import BackendError
from synthllm.params import OpenAIBackendParams

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


def _line(params: OpenAIBackendParams, key: str, request: Request) -> bytes:
    url, body = openai_wire.url_path(params.endpoint), openai_wire.body(params, request)
    return (
        json.dumps({"custom_id": key, "method": "POST", "url": url, "body": body}, ensure_ascii=False) + "\n"
    ).encode("utf-8")


def plan_shards(
    items: Sequence[tuple[str, int, int]], max_requests: int, max_bytes: int, max_tokens: int | None
) -> list[Shard]:
    """Consecutive shards of (key, line bytes, tokens) items within every per-batch limit (a single
    item over a limit gets a shard of its own, which the API will judge)."""
    shards: list[Shard] = []
    keys: list[str] = []
    size, tokens = 0, 0
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
    client: openai.OpenAI, backend: BatchAPIBackend, shard: Shard, lines: dict[str, bytes], state_dir: Path
) -> None:
    upload = client.files.create(
        file=("requests.jsonl", io.BytesIO(b"".join(lines[k] for k in shard.keys))), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=cast(Any, backend.url_path), completion_window="24h"
    )
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


def queued_tokens(request: Request) -> int:
    """What a request counts against ``batch_max_enqueued_tokens``: its :func:`token_bound`, summed."""
    bound = openai_wire.token_bound(request)
    return bound.prompt_tokens + bound.completion_tokens


def _parse(params: OpenAIBackendParams, body: dict | None, request: Request) -> Result:
    raw = openai_wire.record(body, openai_wire.body(params, request))
    try:
        return openai_wire.parse(body, request, raw)
    except Failure as failure:  # answered, but unreadable: cached and failed as online, not resubmitted
        return Result(error=failure.reason, raw=raw)


class BatchAPIBackend(OpenAIProtocolBackend):
    """The Batch API on the first base URL, priced with the batch discount; ``state_dir`` (beside
    the request cache) keeps the ids of batches in flight across restarts."""

    def __init__(self, params: OpenAIBackendParams, state_dir: Path | None = None):
        super().__init__(params)
        if not params.use_batch_api:
            raise BackendError("BatchAPIBackend needs use_batch_api: true (its answers are priced as batch)")
        if state_dir is None:
            raise BackendError(
                "use_batch_api needs a state directory to remember the batch id across "
                "restarts: build BatchAPIBackend(params, state_dir=<request cache folder>)"
            )
        self.state_dir = Path(state_dir)

    def sync_client(self) -> openai.OpenAI:
        """A blocking client on the first base URL, for the Batch API's control calls."""
        return openai.OpenAI(
            api_key=self._key,
            base_url=self._urls[0],
            max_retries=self.params.max_retries,
            timeout=self.params.timeout_s,
        )

    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        self.check(requests)
        if not requests:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        client = self.sync_client()
        indices: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            indices.setdefault(request.cache_key(self.identity), []).append(i)
        remaining = {key: requests[idxs[0]] for key, idxs in indices.items()}
        try:
            with tqdm(total=len(remaining), desc="batch API", unit="req") as bar:
                for round_ in range(self.params.max_retries + 1):
                    retry: dict[str, Request] = {}
                    for key, result in self._round(client, remaining, round_, retry):
                        for i in indices[key]:
                            yield i, result
                        bar.update(1)
                    remaining = retry
                    if not remaining:
                        return
        finally:
            client.close()

    def _round(
        self, client: openai.OpenAI, remaining: dict[str, Request], round_: int, retry: dict[str, Request]
    ) -> Iterator[tuple[str, Result]]:
        """One round: re-attach, shard and submit within the limits, poll, and yield (key, result)
        for every final answer; retryable failures go into ``retry`` for the next round."""
        params, state_dir, limit = self.params, self.state_dir, self.params.batch_max_enqueued_tokens
        active = _attached(state_dir, self.identity, set(remaining))
        covered = {k for shard in active for k in shard.keys}
        lines = {k: _line(params, k, r) for k, r in remaining.items() if k not in covered}
        queue = plan_shards(
            [(k, len(lines[k]), queued_tokens(remaining[k])) for k in lines],
            params.batch_max_requests,
            params.batch_max_bytes,
            limit,
        )
        while active or queue:
            while queue and (not active or limit is None or sum(s.tokens for s in active) + queue[0].tokens <= limit):
                _submit(client, self, queue[0], lines, state_dir)
                active.append(queue.pop(0))
            finished = []
            for shard in active:
                assert shard.batch_id is not None  # set by _submit
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
                    yield (
                        key,
                        (
                            Result(error=self.redact(error), retryable=retryable)
                            if error
                            else _parse(params, body, remaining[key])
                        ),
                    )
                if shard.path is not None:
                    shard.path.unlink(missing_ok=True)
            if active and not finished:
                time.sleep(params.batch_poll_s)
