"""OpenAI-compatible HTTP backend (OpenAI, vLLM, llama.cpp, TGI, ``transformers serve``, ...).

Chat messages go to ``/v1/chat/completions``, prompts to ``/v1/completions``; which of the two a
backend serves is its ``endpoint`` param, so a misrouted stage fails in ``check`` before any call.
Every request ends as a :class:`Result` with text, or with an ``error`` that says why: answers cut
by ``finish_reason=length``/``content_filter`` and empty answers are errors, never guessed labels.

This module owns transport only: bounded, adaptive concurrency (halved on 429, regrown on success),
``Retry-After``, timeouts, and retries of *retryable* failures (429, 408/409, 5xx, timeouts, dropped
connections, unparseable bodies) with exponential backoff and jitter. It does not cache, total
costs or show progress (:mod:`synthllm.backends.runner` does), stream, or score choices over HTTP.
The API key is read from the named environment variable and kept out of identity, results and
error text.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx2
import openai

from synthllm.backends.base import Backend, Request, Result, Usage
from synthllm.errors import BackendError
from synthllm.estimate import approx_tokens
from synthllm.params import OpenAIBackendParams

log = logging.getLogger(__name__)
OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"  # local servers accept any key; the SDK refuses an empty one
RETRYABLE_STATUS = frozenset({408, 409, 429})
FALLBACK_FEATURES = ("response_format", "logprobs")  # optional request fields some servers reject
TOP_LOGPROBS = 5
MAX_RETRY_AFTER_S = 120.0  # a longer server-asked pause is capped, as the SDK does


class Failure(Exception):
    """One failed attempt: what to record, and whether another attempt may succeed."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None, status: int = 0):
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after, self.status = reason, retryable, retry_after, status


class AdaptiveLimit:
    """AIMD concurrency: at most ``limit`` requests in flight; a 429 halves the limit (once per
    cool-down, not once per throttled request) and pauses all senders for ``Retry-After``; each
    success adds ``1/limit``, so the limit regrows by about one slot per window of successes."""

    def __init__(self, ceiling: int):
        self.ceiling, self.limit, self.active = ceiling, float(ceiling), 0
        self._cond = asyncio.Condition()
        self._resume_at = self._cooldown_until = 0.0

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < int(self.limit))
            self.active += 1
        delay = self._resume_at - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def release(self, ok: bool, throttled: bool = False, retry_after: float | None = None) -> None:
        now = asyncio.get_running_loop().time()
        async with self._cond:
            self.active -= 1
            if throttled and now >= self._cooldown_until:
                self.limit = max(1.0, self.limit / 2)
                self._cooldown_until = now + max(retry_after or 0.0, 1.0)
            if throttled and retry_after:
                self._resume_at = max(self._resume_at, now + retry_after)
            elif ok:
                self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self._cond.notify_all()


def retry_after_s(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or numeric ``retry-after``; None when absent or a date."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = headers.get(name) if headers is not None else None
            if value is not None:
                return min(MAX_RETRY_AFTER_S, max(0.0, float(value) * scale))
        except ValueError:
            continue
    return None


def first_answer_logprobs(content: list[dict] | None, keys: set[str]) -> dict[str, float] | None:
    """Top log-probabilities at the first token that carries the answer, keyed by token text.
    Best effort: JSON punctuation and the schema's own key names (``{"label": ...``) are skipped,
    and a shape we do not know gives None rather than an error."""
    if not isinstance(content, list):
        return None
    for item in content:
        text = (item.get("token") or "").strip(" \n\t{}\":,")
        if not text or text in keys:
            continue
        tops = item.get("top_logprobs") or [item]
        found: dict[str, float] = {}
        for top in tops:  # highest first; a later duplicate (" neutral" vs "neutral") is smaller
            if isinstance(top.get("logprob"), (int, float)):
                found.setdefault((top.get("token") or "").strip(), float(top["logprob"]))
        return found or None
    return None


class OpenAIBackend(Backend):
    def __init__(self, params: OpenAIBackendParams, state_dir: Path | None = None):
        self.params = params
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.kinds = frozenset({"chat" if params.endpoint == "chat" else "complete"})
        self.batch_size = params.concurrency
        key = os.environ.get(params.api_key_env)
        if not key and not params.base_urls:
            raise BackendError(f"environment variable {params.api_key_env} is not set: export your OpenAI "
                               f"API key there, or set backend.base_urls to a local OpenAI-compatible server")
        self._key = key or PLACEHOLDER_KEY
        self._urls = sorted(u.rstrip("/") for u in params.base_urls) or [OPENAI_URL]
        self._unsupported: set[str] = set()  # features a server rejected; dropped from later requests
        if params.use_batch_api and self.state_dir is None:
            raise BackendError("use_batch_api needs a state directory to remember the batch id across "
                               "restarts: build OpenAIBackend(params, state_dir=<request cache folder>)")

    @property
    def identity(self) -> str:
        hosts = ",".join(self._urls) if self.params.base_urls else "api.openai.com"
        return f"openai:{self.params.model}@{hosts}"

    # ---- accounting -------------------------------------------------------------------------
    def accounting(self) -> dict:
        return {"cost": self.cost, "cost_bound": self.cost_bound, "budget_usd": self.params.budget_usd}

    def cost(self, result: Result) -> float:
        price = self.params.price
        usd = (result.usage.prompt_tokens * price.input_per_mtok
               + result.usage.completion_tokens * price.output_per_mtok) / 1e6
        return usd * (1 - price.batch_discount) if self.params.use_batch_api else usd

    def cost_bound(self, request: Request) -> float:
        """Dollars a request may cost at most: estimated prompt tokens plus the full output cap."""
        text = request.prompt or "".join(str(m.get("content") or "") for m in request.messages or ())
        tokens = approx_tokens(text) + 4 * len(request.messages or ())
        return self.cost(Result(usage=Usage(tokens, request.max_new_tokens)))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != PLACEHOLDER_KEY else text

    def sync_client(self) -> openai.OpenAI:
        """A blocking client on the first base URL, for the Batch API's few control calls."""
        return openai.OpenAI(api_key=self._key, base_url=self._urls[0], max_retries=self.params.max_retries,
                             timeout=self.params.timeout_s)

    # ---- request bodies and answers (shared with the batch API) -------------------------------
    @property
    def url_path(self) -> str:
        return "/v1/chat/completions" if self.params.endpoint == "chat" else "/v1/completions"

    def body(self, request: Request) -> dict:
        body: dict[str, Any] = {"model": self.params.model, "max_tokens": request.max_new_tokens,
                                "temperature": request.temperature, "top_p": request.top_p,
                                "seed": request.seed}
        if request.stop:
            body["stop"] = list(request.stop)
        if request.kind == "complete":
            return {**body, "prompt": request.prompt}
        body["messages"] = [dict(m) for m in request.messages or ()]
        schema = request.json_schema
        if schema and self.params.structured_output and "response_format" not in self._unsupported:
            wrapped = schema if {"name", "schema"} <= set(schema) else {"name": "answer", "schema": schema,
                                                                        "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": wrapped}
        if self.params.logprobs and "logprobs" not in self._unsupported:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        return body

    def parse(self, data: Any, request: Request) -> Result:
        """A completion body (dict) as a Result; raises a retryable Failure when it is malformed."""
        try:
            choice = data["choices"][0]
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
            used = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            message = choice.get("message") or {}
            text = choice.get("text") if request.kind == "complete" else message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise Failure("malformed response body: no choices", retryable=True) from None
        if finish in ("length", "content_filter"):
            return Result(text=text, finish_reason=finish, usage=used, error=f"finish_reason={finish}")
        if message.get("refusal"):
            return Result(finish_reason=finish, usage=used, error=f"refusal: {message['refusal'][:200]}")
        if not isinstance(text, str) or not text.strip():
            return Result(finish_reason=finish, usage=used, error="empty answer")
        logprobs = None
        if request.kind == "chat" and isinstance(choice.get("logprobs"), dict):
            keys = set((request.json_schema or {}).get("properties", {}))
            logprobs = first_answer_logprobs(choice["logprobs"].get("content"), keys)
        return Result(text=text, finish_reason=finish, choice_logprobs=logprobs, usage=used)

    # ---- transport ----------------------------------------------------------------------------
    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        self.check(requests)
        if not requests:
            return
        if self.params.use_batch_api:
            from synthllm.backends.batch_api import run_batch

            yield from run_batch(self, requests)
            return
        loop = asyncio.new_event_loop()
        http = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=self.params.concurrency,
                                                       max_keepalive_connections=self.params.concurrency))
        # one connection pool for all replicas; each attempt takes the next replica in turn
        clients = itertools.cycle([openai.AsyncOpenAI(api_key=self._key, base_url=url, max_retries=0,
                                                      timeout=self.params.timeout_s, http_client=http)
                                   for url in self._urls])
        limit = AdaptiveLimit(self.params.concurrency)
        todo, pending = iter(enumerate(requests)), set()
        try:
            while True:
                # a bounded window of tasks: 100k requests are not 100k coroutines at once
                for i, request in itertools.islice(todo, 2 * self.params.concurrency - len(pending)):
                    pending.add(loop.create_task(self._answer(i, request, clients, limit)))
                if not pending:
                    return
                done, pending = loop.run_until_complete(
                    asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for task in done:
                    yield task.result()
        finally:
            for task in pending:  # the caller stopped early (budget, error, kill): drop what is in flight
                task.cancel()
            loop.run_until_complete(_drain(pending, http))
            loop.close()

    async def _answer(self, index: int, request: Request, clients: Iterator[openai.AsyncOpenAI],
                      limit: AdaptiveLimit) -> tuple[int, Result]:
        for attempt in range(self.params.max_retries + 1):
            await limit.acquire()
            try:
                result = await self._send(request, next(clients))
            except Failure as failure:
                await limit.release(ok=False, throttled=failure.status == 429, retry_after=failure.retry_after)
                if not failure.retryable or attempt == self.params.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if failure.retryable else ""
                    return index, Result(error=self.redact(failure.reason) + tries,
                                         retryable=failure.retryable)
                backoff = min(60.0, self.params.retry_backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                await asyncio.sleep(max(failure.retry_after or 0.0, backoff))
            else:
                await limit.release(ok=True)
                return index, result
        raise AssertionError("unreachable: the loop returns on its last attempt")

    async def _send(self, request: Request, client: openai.AsyncOpenAI) -> Result:
        body = self.body(request)
        try:
            # The body is plain JSON already: posting it skips the SDK's per-request TypedDict
            # transform and model build, which cost ~2 ms of CPU each (a third of our throughput).
            response = await asyncio.wait_for(  # a wall-clock bound: httpx's timeouts are per read
                client.post(self.url_path.removeprefix("/v1"), body=body, cast_to=object), self.params.timeout_s)
        except openai.APIStatusError as err:
            message = _error_message(err)
            rejected = [f for f in FALLBACK_FEATURES if f in body and f in message]
            if err.status_code == 400 and rejected:
                log.warning("%s rejected %s (%s); sending requests without it from now on",
                            self.identity, rejected, self.redact(message))
                self._unsupported.update(rejected)  # remembered: later requests go without it
                return await self._send(request, client)
            retryable = err.status_code in RETRYABLE_STATUS or err.status_code >= 500
            raise Failure(f"http {err.status_code}: {message}", retryable,
                          retry_after_s(err.response.headers), err.status_code) from None
        except (openai.APITimeoutError, TimeoutError):
            raise Failure(f"timeout after {self.params.timeout_s:g} s", retryable=True) from None
        except openai.APIConnectionError as err:
            raise Failure(f"connection error: {type(err.__cause__).__name__}", retryable=True) from None
        except (ValueError, openai.APIResponseValidationError) as err:  # json.JSONDecodeError included
            raise Failure(f"malformed response body: {type(err).__name__}", retryable=True) from None
        except openai.OpenAIError as err:  # anything else the SDK raises fails this row, not the run
            raise Failure(f"client error: {type(err).__name__}: {err}", retryable=False) from None
        if not isinstance(response, dict):  # the SDK hands back a non-JSON body as text
            raise Failure("malformed response body: not a JSON object", retryable=True)
        return self.parse(response, request)


async def _drain(tasks: set[asyncio.Task], http: httpx2.AsyncClient) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()


def _error_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        body = body.get("error", body)
        body = body.get("message", body) if isinstance(body, dict) else body
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False) if body else err.message
    return str(text)[:300]
