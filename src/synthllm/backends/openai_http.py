"""OpenAI-compatible HTTP backend (OpenAI, vLLM, llama.cpp, TGI, ``transformers serve``, ...).

Chat messages go to ``/v1/chat/completions``, prompts to ``/v1/completions``; which of the two a
backend serves is its ``endpoint`` param, so a misrouted stage fails in ``check`` before any call.
A completions backend also serves ``score`` requests: one generated token with its
``top_logprobs`` alternatives, from which the task layer scores the choices (the server cannot be
asked for the probability of an arbitrary continuation). Every request ends as a :class:`Result`
with text, or with an ``error`` that says why: answers cut by ``finish_reason=length``/
``content_filter`` and empty answers are errors, never guessed labels.

The raw response (the body as received, plus which optional request fields were actually sent) is
``Result.raw``, which the runner caches; :meth:`OpenAIBackend.decode` re-parses it, so this module's
parsing can change without paying again. Token log-probabilities are normalised from both formats
servers use (``content`` lists as in chat, and the legacy completions ``tokens``/``top_logprobs``).

This module owns transport only: bounded, adaptive concurrency (halved on 429, regrown on success),
``Retry-After``, timeouts, and retries of *retryable* failures (429, 408/409, 5xx, timeouts, dropped
connections, unparseable bodies) with exponential backoff and jitter. Requests go out as pre-built
JSON over one aiohttp keep-alive pool, not through the OpenAI SDK's client, whose per-request
models and httpx stack cost several times the CPU of the exchange itself (measured in
``benchmarks/results/http_client.md``); the SDK still serves the Batch API's control calls. It does not cache, total
costs or show progress (:mod:`synthllm.backends.runner` does), stream, or interpret answers. The
cache identity leaves out ``base_urls``: replicas of one served model share answers, and
``served_identity`` names what they serve. The API key is read from the named environment variable and kept out of identity, results and
error text.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import yarl

from synthllm.backends.base import Backend, Request, Result, TokenChoice, TokenStep, Usage
from synthllm.backends.http_errors import Failure, is_retryable
from synthllm.errors import BackendError
from synthllm.estimate import approx_tokens
from synthllm.params import OpenAIBackendParams

log = logging.getLogger(__name__)
OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"  # local servers accept any key; the SDK refuses an empty one
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


def _token_bytes(token: object, data: object) -> bytes:
    """A token's UTF-8 bytes: the ``bytes`` field when given (a token may end mid-character),
    else its text (vLLM writes undecodable legacy tokens as ``bytes:\\xe2\\x80``)."""
    if isinstance(data, list) and all(isinstance(b, int) for b in data):
        return bytes(data)
    text = str(token or "")
    if text.startswith("bytes:"):
        return codecs.escape_decode(text[6:].encode("ascii", "backslashreplace"))[0]
    return text.encode("utf-8")


def _choice(item: dict) -> TokenChoice | None:
    lp = item.get("logprob")
    if not isinstance(lp, (int, float)) or lp != lp:  # absent, null or NaN: unusable
        return None
    return TokenChoice(_token_bytes(item.get("token"), item.get("bytes")), float(lp))


def token_steps(logprobs: object) -> tuple[TokenStep, ...] | None:
    """Generated tokens with their top alternatives, from a choice's ``logprobs`` in either format
    (chat-style ``content`` list, or legacy completions ``tokens``/``token_logprobs``/
    ``top_logprobs``); None when the server sent none or a shape this does not know."""
    if not isinstance(logprobs, dict):
        return None
    steps = []
    if isinstance(logprobs.get("content"), list):
        for item in logprobs["content"]:
            chosen = _choice(item) if isinstance(item, dict) else None
            if chosen is None:
                return None
            alts = [_choice(t) for t in item.get("top_logprobs") or [] if isinstance(t, dict)]
            steps.append(TokenStep(chosen, tuple(a for a in alts if a is not None)))
        return tuple(steps)
    tokens, lps = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(lps, list) and len(tokens) == len(lps):
        tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        for token, lp, top in zip(tokens, lps, tops):
            chosen = _choice({"token": token, "logprob": lp})
            if chosen is None:
                return None
            alts = [_choice({"token": k, "logprob": v}) for k, v in (top or {}).items()]
            steps.append(TokenStep(chosen, tuple(a for a in alts if a is not None)))
        return tuple(steps)
    return None


class OpenAIBackend(Backend):
    def __init__(self, params: OpenAIBackendParams, state_dir: Path | None = None):
        self.params = params
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.kinds = frozenset({"chat" if params.endpoint == "chat" else "complete"})
        self.batch_size = params.concurrency
        key = os.environ.get(params.api_key_env)
        if not key and not params.base_urls:
            raise BackendError(
                f"environment variable {params.api_key_env} is not set: export your OpenAI "
                f"API key there, or set backend.base_urls to a local OpenAI-compatible server"
            )
        self._key = key or PLACEHOLDER_KEY
        self._urls = sorted(u.rstrip("/") for u in params.base_urls) or [OPENAI_URL]
        if params.endpoint == "completions":
            self.kinds = frozenset({"complete", "score"})
        self._unsupported: set[str] = set()  # features a server rejected; dropped from later requests
        if params.use_batch_api and self.state_dir is None:
            raise BackendError(
                "use_batch_api needs a state directory to remember the batch id across "
                "restarts: build OpenAIBackend(params, state_dir=<request cache folder>)"
            )

    @property
    def identity(self) -> str:
        """The served model and the settings that shape its answers; not the URLs (replicas of one
        served model share cached answers), never the key."""
        p = self.params
        where = "served" if p.base_urls else "openai-api"
        return (
            f"{where}:{p.served_identity or p.model}|{p.endpoint}|json_schema={p.structured_output}"
            f"|top_logprobs={p.top_logprobs if p.logprobs else 0}"
        )

    # ---- accounting -------------------------------------------------------------------------
    @property
    def ledger(self) -> str:
        """The spending ledger's scope: the served model, whichever stage or run asks it."""
        p = self.params
        return f"{'served' if p.base_urls else 'openai-api'}:{p.served_identity or p.model}"

    def accounting(self) -> dict:
        return {
            "cost": self.cost,
            "cost_bound": self.cost_bound,
            "budget_usd": self.params.budget_usd,
            "ledger": self.ledger,
        }

    def cost(self, result: Result) -> float:
        return self.params.price.usd(
            result.usage.prompt_tokens, result.usage.completion_tokens, self.params.use_batch_api
        )

    def cost_bound(self, request: Request) -> float:
        """Dollars a request may cost at most: estimated prompt tokens plus the full output cap."""
        text = request.prompt or "".join(str(m.get("content") or "") for m in request.messages or ())
        tokens = approx_tokens(text) + 4 * len(request.messages or ())
        return self.cost(Result(usage=Usage(tokens, 1 if request.kind == "score" else request.max_new_tokens)))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != PLACEHOLDER_KEY else text

    def sync_client(self) -> openai.OpenAI:
        """A blocking client on the first base URL, for the Batch API's few control calls."""
        return openai.OpenAI(
            api_key=self._key,
            base_url=self._urls[0],
            max_retries=self.params.max_retries,
            timeout=self.params.timeout_s,
        )

    # ---- request bodies and answers (shared with the batch API) -------------------------------
    @property
    def url_path(self) -> str:
        return "/v1/chat/completions" if self.params.endpoint == "chat" else "/v1/completions"

    def body(self, request: Request) -> dict:
        p, body = self.params, {"model": self.params.model, "seed": request.seed}
        if request.kind == "score":  # one token; the choices are read off its alternatives
            body.update(prompt=request.prompt, max_tokens=1, temperature=0.0)
            if "logprobs" not in self._unsupported:
                body["logprobs"] = p.top_logprobs
            return body
        body.update(max_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.kind == "complete":
            if p.logprobs and "logprobs" not in self._unsupported:
                body["logprobs"] = p.top_logprobs
            return {**body, "prompt": request.prompt}
        body["messages"] = [dict(m) for m in request.messages or ()]
        schema = request.json_schema
        if schema and p.structured_output and "response_format" not in self._unsupported:
            wrapped = (
                schema if {"name", "schema"} <= set(schema) else {"name": "answer", "schema": schema, "strict": True}
            )
            body["response_format"] = {"type": "json_schema", "json_schema": wrapped}
        if p.logprobs and "logprobs" not in self._unsupported:
            body.update(logprobs=True, top_logprobs=p.top_logprobs)
        return body

    def record(self, data: Any, body: dict) -> dict:
        """The raw response as cached: the body as received, and the optional fields that were
        sent (a server may have refused response_format, so the cached answer says how it was asked)."""
        return {"body": data, "sent": {"response_format": "response_format" in body, "logprobs": "logprobs" in body}}

    def decode(self, raw: dict, request: Request) -> Result:
        try:
            return self.parse(raw["body"], request, raw)
        except Failure as failure:  # a body today's parser cannot read: that row fails, the run goes on
            return Result(error=failure.reason, raw=raw)

    def parse(self, data: Any, request: Request, raw: dict | None = None) -> Result:
        """A completion body (dict) as a Result; raises a retryable Failure when it is malformed."""
        try:
            choice = data["choices"][0]
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
            used = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            message = choice.get("message") or {}
            text = choice.get("text") if request.kind in ("complete", "score") else message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise Failure("malformed response body: no choices", retryable=True) from None
        structured = bool(raw and raw["sent"]["response_format"])
        steps = token_steps(choice.get("logprobs"))
        if request.kind == "score":  # cut at one token by design; what counts is the alternatives
            error = None if steps else "no token logprobs in the answer (does the server return them?)"
            return Result(text=text, finish_reason=finish, tokens=steps, usage=used, error=error, raw=raw)
        if finish in ("length", "content_filter"):
            return Result(
                text=text,
                finish_reason=finish,
                tokens=steps,
                usage=used,
                error=f"finish_reason={finish}",
                structured=structured,
                raw=raw,
            )
        if message.get("refusal"):
            return Result(
                finish_reason=finish,
                usage=used,
                error=f"refusal: {message['refusal'][:200]}",
                structured=structured,
                raw=raw,
            )
        if not isinstance(text, str) or not text.strip():
            return Result(finish_reason=finish, usage=used, error="empty answer", structured=structured, raw=raw)
        return Result(text=text, finish_reason=finish, tokens=steps, usage=used, structured=structured, raw=raw)

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
        http = loop.run_until_complete(self._session())
        # one connection pool for all replicas; each attempt takes the next replica in turn
        targets = itertools.cycle([_target(url + self.url_path.removeprefix("/v1")) for url in self._urls])
        limit = AdaptiveLimit(self.params.concurrency)
        todo, pending, finished = iter(enumerate(requests)), set(), collections.deque()
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
                    task = finished.popleft()
                    pending.discard(task)
                    yield task.result()
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
        return self.parse(data, request, self.record(data, body))


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
