"""OpenAI Batch API mode of :class:`~synthllm.backends.openai_http.OpenAIBackend`.

Requests are written as JSONL whose ``custom_id`` is the request's cache key, uploaded, run as one
batch, polled every ``batch_poll_s`` and mapped back by ``custom_id``. Items that failed
retryably (429, 5xx, expired, missing from the output) are resubmitted in a new batch, at most
``max_retries`` times; the rest end as error results. Only the first base URL is used.

The batch id is written to a state file in ``state_dir`` (beside the request cache) *before*
polling starts, together with the keys it answers. A killed process re-attaches on the next run to
any unfinished batch whose keys cover what is still missing, instead of paying for a second batch.
The state file is removed once every answer of its batch has been handed to the caller (and so
cached). This module does not cache, price or parse answers; the backend and runner do. Answers come
back with the raw record the online path builds, so the cache holds the same thing either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import openai
from tqdm.auto import tqdm

from synthllm.backends.base import Request, Result
from synthllm.backends.http_errors import Failure, is_retryable

if TYPE_CHECKING:
    from synthllm.backends.openai_http import OpenAIBackend

TERMINAL = ("completed", "failed", "expired", "cancelled")
Outcome = tuple[dict | None, str | None, bool]  # (response body, error, retryable)


def _state_path(state_dir: Path, keys: Sequence[str]) -> Path:
    return state_dir / f"batch-{hashlib.sha256(''.join(sorted(keys)).encode()).hexdigest()[:16]}.json"


def _find_state(state_dir: Path, identity: str, keys: set[str]) -> tuple[Path, str] | None:
    """An earlier, unfinished batch of this backend that answers every key still missing."""
    for path in sorted(state_dir.glob("batch-*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written file from a kill during the write: that batch is lost
        if state.get("identity") == identity and keys <= set(state.get("keys", ())):
            return path, state["batch_id"]
    return None


def _submit(client: openai.OpenAI, backend: "OpenAIBackend", items: dict[str, Request]) -> str:
    lines = (json.dumps({"custom_id": key, "method": "POST", "url": backend.url_path,
                         "body": backend.body(request)}, ensure_ascii=False)
             for key, request in items.items())
    data = ("\n".join(lines) + "\n").encode("utf-8")
    upload = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=backend.url_path,
                                  completion_window="24h")
    return batch.id


def _wait(client: openai.OpenAI, batch_id: str, poll_s: float, total: int):
    with tqdm(total=total, desc=f"batch {batch_id}", unit="req") as bar:
        while True:
            batch = client.batches.retrieve(batch_id)
            counts = batch.request_counts
            done = (counts.completed + counts.failed) if counts is not None else 0
            bar.update(max(0, done - bar.n))
            if batch.status in TERMINAL:
                return batch
            time.sleep(poll_s)


def _outcome(line: dict) -> Outcome:
    response, error = line.get("response") or {}, line.get("error")
    status = response.get("status_code")
    if status == 200 and not error:
        return response.get("body"), None, False
    body = response.get("body") or {}
    detail = error or (body.get("error") if isinstance(body, dict) else body) or {}
    message = detail.get("message", detail) if isinstance(detail, dict) else detail
    code = detail.get("code") if isinstance(detail, dict) else None
    retryable = status is None or is_retryable(status) or code == "batch_expired"
    return None, f"http {status or code}: {str(message)[:300]}", retryable


def _collect(client: openai.OpenAI, batch) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for file_id in (batch.error_file_id, batch.output_file_id):  # output last: it wins on overlap
        if file_id:
            for raw in client.files.content(file_id).text.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    outcomes[line["custom_id"]] = _outcome(line)
    return outcomes


def _missing(batch) -> Outcome:
    """The outcome of a request the batch has no line for: retried unless the batch itself
    failed validation or was cancelled (resubmitting the same file would fail the same way)."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    detail = "; ".join(str(e.message) for e in errors[:3]) or "no answer for this request"
    return None, f"batch {batch.status}: {detail}", batch.status in ("completed", "expired")


def run_batch(backend: "OpenAIBackend", requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
    params, state_dir = backend.params, backend.state_dir
    assert state_dir is not None  # checked when the backend is built
    state_dir.mkdir(parents=True, exist_ok=True)
    client = backend.sync_client()
    indices: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        indices.setdefault(request.cache_key(backend.identity), []).append(i)
    remaining = {key: requests[idxs[0]] for key, idxs in indices.items()}
    try:
        for round_ in range(params.max_retries + 1):
            found = _find_state(state_dir, backend.identity, set(remaining))
            if found is None:
                path = _state_path(state_dir, list(remaining))
                batch_id = _submit(client, backend, remaining)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"identity": backend.identity, "batch_id": batch_id,
                                           "keys": sorted(remaining)}), encoding="utf-8")
                tmp.replace(path)  # atomic: a kill leaves the old state or the new, never half
            else:
                path, batch_id = found
            batch = _wait(client, batch_id, params.batch_poll_s, len(remaining))
            outcomes = _collect(client, batch)
            retry: dict[str, Request] = {}
            missing = _missing(batch)
            for key, request in remaining.items():
                body, error, retryable = outcomes.get(key, missing)
                if error and retryable and round_ < params.max_retries:
                    retry[key] = request
                    continue
                result = Result(error=backend.redact(error), retryable=retryable) if error else _parse(
                    backend, body, request)
                for i in indices[key]:
                    yield i, result
            path.unlink(missing_ok=True)
            remaining = retry
            if not remaining:
                return
    finally:
        client.close()


def _parse(backend: "OpenAIBackend", body: dict | None, request: Request) -> Result:
    try:
        return backend.parse(body, request, backend.record(body, backend.body(request)))
    except Failure as failure:  # not resubmitted: the batch already ran it to completion
        return Result(error=failure.reason, retryable=True)
