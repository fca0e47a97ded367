"""OpenAI-compatible HTTP backend (OpenAI, vLLM, llama.cpp, TGI, ``transformers serve``, ...).

Chat messages go to ``/v1/chat/completions``, prompts to ``/v1/completions``; which of the two a
backend serves is its ``endpoint`` param, so a misrouted stage fails in ``check`` before any call.
A completions backend also serves ``score`` requests: one generated token with its
``top_logprobs`` alternatives, from which the task layer scores the choices (the server cannot be
asked for the probability of an arbitrary continuation). Every request ends as a :class:`Result`
with text, or with an ``error`` that says why: answers cut by ``finish_reason=length``/
``content_filter`` and empty answers are errors, never guessed labels.

The raw response (the body as received, plus which optional request fields were actually sent) is
``Result.raw``, which the runner caches; :meth:`OpenAIBackend.decode` re-parses it, so the parsing
can change without paying again. Request bodies, parsing, identity and prices are the protocol's
(:mod:`synthllm.backends.openai_wire`), shared with the Batch API backend
(:mod:`synthllm.backends.batch_api`).

This module owns transport only: bounded, adaptive concurrency (halved on 429, regrown on success),
``Retry-After``, timeouts, and retries of *retryable* failures (429, 408/409, 5xx, timeouts, dropped
connections, unparseable bodies) with exponential backoff and jitter. Requests go out as pre-built
JSON over one aiohttp keep-alive pool, not through the OpenAI SDK's client, whose per-request
models and httpx stack cost several times the CPU of the exchange itself (measured in
``benchmarks/results/http_client.md``). It does not cache, total
costs or show progress (:mod:`synthllm.backends.runner` does), stream, or interpret answers. The
cache identity leaves out ``base_urls``: replicas of one served model share answers, and
``served_identity`` names what they serve. The API key is read from the named environment variable and kept out of identity, results and
error text.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import httpx2
import openai
import yarl

from synthllm.backends import openai_wire
from synthllm.backends.base import Request, Result
from synthllm.backends.http_errors import Failure, is_retryable
from synthllm.backends.openai_wire import OpenAIProtocolBackend
from synthllm.errors import BackendError
from synthllm.params import OpenAIBackendParams

log = logging.getLogger(__name__)
FALLBACK_FEATURES = ("response_format", "logprobs")  # optional request fields some servers reject
MAX_RETRY_AFTER_S = 120.0  # a longer server-asked pause is capped, as the SDK does
Target = tuple[yarl.URL, "yarl.URL | None", "aiohttp.BasicAuth | None"]  # an endpoint, its proxy, proxy auth


class AdaptiveLimit:
    """AIMD concurrency: at most ``limit`` requests in flight; a 429 halves the limit (once per
    cool-down, not once per throttled request) and pauses all senders for ``Retry-After``; each
    success adds ``1/limit``, so the limit regrows by about one slot per window of successes.

    Waiters queue in order and a release hands its slot to exactly one of them: waking every
    waiter to re-check (a condition's ``notify_all``) costs O(waiters) per request, which at a
    concurrency of 512 was most of the client's CPU."""

    def __init__(self, ceiling: int):
        self.ceiling, self.limit, self.active = ceiling, float(ceiling), 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._resume_at = self._cooldown_until = 0.0

    async def acquire(self) -> None:
        if self._waiters or self.active >= int(self.limit):
            slot = asyncio.get_running_loop().create_future()
            self._waiters.append(slot)
            try:
                await slot  # resolved by _hand_over, which has counted us in
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():  # a slot was handed over as we were cancelled
                    self.active -= 1
                    self._hand_over()
                elif slot in self._waiters:  # (a hand-over may have dropped it already)
                    self._waiters.remove(slot)
                raise
        else:
            self.active += 1
        if self._resume_at:
            delay = self._resume_at - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def release(self, ok: bool, throttled: bool = False, retry_after: float | None = None) -> None:
        self.active -= 1
        if throttled:
            now = asyncio.get_running_loop().time()
            if now >= self._cooldown_until:
                self.limit = max(1.0, self.limit / 2)
                self._cooldown_until = now + max(retry_after or 0.0, 1.0)
        if throttled and retry_after:
            self._resume_at = max(self._resume_at, asyncio.get_running_loop().time() + retry_after)
        elif ok:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.active < int(self.limit):
            slot = self._waiters.popleft()
            if not slot.done():  # a cancelled waiter is skipped
                self.active += 1
                slot.set_result(None)


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


class OpenAIBackend(OpenAIProtocolBackend):
    """Online requests to one or more replicas (``base_urls``); the Batch API is
    :class:`~synthllm.backends.batch_api.BatchAPIBackend`, which :func:`~synthllm.backends.make_backend`
    picks for ``use_batch_api: true``."""

    def __init__(self, params: OpenAIBackendParams):
        super().__init__(params)
        self._unsupported: set[str] = set()  # features a server rejected; dropped from later requests
        if params.use_batch_api:
            raise BackendError(
                "use_batch_api is served by BatchAPIBackend, not OpenAIBackend: build the backend "
                "with synthllm.backends.make_backend(params, state_dir=<request cache folder>)"
            )

    def body(self, request: Request) -> dict:
        return openai_wire.body(self.params, request, self._unsupported)

    # ---- transport ----------------------------------------------------------------------------
    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        self.check(requests)
        if not requests:
            return
        loop = asyncio.new_event_loop()
        http = loop.run_until_complete(self._session())
        # one connection pool for all replicas; each attempt takes the next replica in turn
        targets = itertools.cycle([_target(url + self.url_path.removeprefix("/v1")) for url in self._urls])
        limit = AdaptiveLimit(self.params.concurrency)
        todo = iter(enumerate(requests))
        pending: set[asyncio.Task] = set()
        finished: collections.deque[asyncio.Task] = collections.deque()
        wake = loop.create_future()

        def on_done(task: asyncio.Task) -> None:  # answers queue up here; one wake-up takes them all
            finished.append(task)
            if not wake.done():
                wake.set_result(None)

        try:
            while True:
                # a bounded window of tasks: 100k requests are not 100k coroutines at once
                for i, request in itertools.islice(todo, 2 * self.params.concurrency - len(pending)):
                    task = loop.create_task(self._answer(i, request, http, targets, limit))
                    task.add_done_callback(on_done)
                    pending.add(task)
                if not pending:
                    return
                if not finished:  # not asyncio.wait: it hooks every pending task, O(window) per call
                    wake = loop.create_future()
                    loop.run_until_complete(wake)
                while finished:
                    done = finished.popleft()
                    pending.discard(done)
                    yield done.result()
        finally:
            for task in pending:  # the caller stopped early (budget, error, kill): drop what is in flight
                task.cancel()
            loop.run_until_complete(_drain(pending, http))
            loop.close()

    async def _session(self) -> aiohttp.ClientSession:
        """One aiohttp session (opened inside the loop) whose pool holds ``concurrency`` keep-alive
        connections over all replicas, with a wall-clock bound per attempt (pool wait, connect and
        the whole body, not per read). The headers are those the OpenAI SDK sends, and cookies are
        kept per run as its httpx client keeps them. TLS trust
        is the SDK's (``httpx2.create_ssl_context``: certifi, or ``SSL_CERT_FILE``); proxies come
        from the environment, resolved once per replica in :func:`_target`, as httpx does."""
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"synthllm (openai-python/{openai.__version__})",
        }
        for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if os.environ.get(variable):  # as the SDK does
                headers[header] = os.environ[variable]
        tls = httpx2.create_ssl_context() if any(u.startswith("https:") for u in self._urls) else True
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.params.concurrency, limit_per_host=0, ssl=tls),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.params.timeout_s),
            raise_for_status=False,
        )

    async def _answer(
        self, index: int, request: Request, http: aiohttp.ClientSession, targets: Iterator[Target], limit: AdaptiveLimit
    ) -> tuple[int, Result]:
        for attempt in range(self.params.max_retries + 1):
            await limit.acquire()
            try:
                result = await self._send(request, http, next(targets))
            except Failure as failure:
                await limit.release(ok=False, throttled=failure.status == 429, retry_after=failure.retry_after)
                if not failure.retryable or attempt == self.params.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if failure.retryable else ""
                    return index, Result(error=self.redact(failure.reason) + tries, retryable=failure.retryable)
                backoff = min(60.0, self.params.retry_backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                await asyncio.sleep(max(failure.retry_after or 0.0, backoff))
            else:
                await limit.release(ok=True)
                return index, result
        raise AssertionError("unreachable: the loop returns on its last attempt")

    async def _send(self, request: Request, http: aiohttp.ClientSession, target: Target) -> Result:
        body = self.body(request)
        # Plain JSON bytes over aiohttp, without the SDK's request and response models: their
        # per-request validation and copying cost more CPU than the HTTP exchange itself.
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        url, proxy, proxy_auth = target
        try:
            async with http.post(
                url, data=payload, proxy=proxy, proxy_auth=proxy_auth, allow_redirects=False
            ) as response:
                status, content = response.status, await response.read()
                headers = response.headers
        except TimeoutError:  # one class from 3.11 on; aiohttp's ServerTimeoutError too
            raise Failure(f"timeout after {self.params.timeout_s:g} s", retryable=True) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError, OSError) as err:
            # refused, dropped or cut connections and garbled HTTP: another attempt may succeed
            raise Failure(f"connection error: {type(err).__name__}", retryable=True) from None
        except aiohttp.ClientError as err:  # anything else (a bad URL, say) fails this row, not the run
            raise Failure(f"client error: {type(err).__name__}: {err}", retryable=False) from None
        if status >= 300:
            message = _error_message(status, content)
            rejected = [f for f in FALLBACK_FEATURES if f in body and f in message]
            if status == 400 and rejected:
                log.warning(
                    "%s rejected %s (%s); sending requests without it from now on",
                    self.identity,
                    rejected,
                    self.redact(message),
                )
                self._unsupported.update(rejected)  # remembered: later requests go without it
                return await self._send(request, http, target)
            raise Failure(f"http {status}: {message}", is_retryable(status), retry_after_s(headers), status)
        try:
            data = json.loads(content)
        except ValueError as err:  # json.JSONDecodeError and undecodable bytes
            raise Failure(f"malformed response body: {type(err).__name__}", retryable=True) from None
        if not isinstance(data, dict):
            raise Failure("malformed response body: not a JSON object", retryable=True)
        return openai_wire.parse(data, request, openai_wire.record(data, body))


def _target(url: str) -> Target:
    """An endpoint URL with the proxy the environment names for it (``HTTPS_PROXY``, ``NO_PROXY``...)."""
    endpoint = yarl.URL(url)
    try:
        return (endpoint, *aiohttp.helpers.get_env_proxy_for_url(endpoint))
    except LookupError:
        return endpoint, None, None


async def _drain(tasks: set[asyncio.Task], http: aiohttp.ClientSession) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close()


def _error_message(status: int, content: bytes) -> str:
    """The ``error.message`` of an error body, else the body's text (as the SDK reads it)."""
    text = content.decode("utf-8", "replace").strip()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        body = body.get("error", body)
        body = body.get("message", body) if isinstance(body, dict) else body
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False) if body else f"Error code: {status}"
    return str(text)[:300]
