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
connections, unparseable bodies) with exponential backoff and jitter. It does not cache, total
costs or show progress (:mod:`synthllm.backends.runner` does), stream, or interpret answers. The
cache identity leaves out ``base_urls``: replicas of one served model share answers, and
``served_identity`` names what they serve. The API key is read from the named environment variable and kept out of identity, results and
error text.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx2
import openai

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
            raise BackendError(f"environment variable {params.api_key_env} is not set: export your OpenAI "
                               f"API key there, or set backend.base_urls to a local OpenAI-compatible server")
        self._key = key or PLACEHOLDER_KEY
        self._urls = sorted(u.rstrip("/") for u in params.base_urls) or [OPENAI_URL]
        if params.endpoint == "completions":
            self.kinds = frozenset({"complete", "score"})
        self._unsupported: set[str] = set()  # features a server rejected; dropped from later requests
        if params.use_batch_api and self.state_dir is None:
            raise BackendError("use_batch_api needs a state directory to remember the batch id across "
                               "restarts: build OpenAIBackend(params, state_dir=<request cache folder>)")

    @property
    def identity(self) -> str:
        """The served model and the settings that shape its answers; not the URLs (replicas of one
        served model share cached answers), never the key."""
        p = self.params
        where = "served" if p.base_urls else "openai-api"
        return (f"{where}:{p.served_identity or p.model}|{p.endpoint}|json_schema={p.structured_output}"
                f"|top_logprobs={p.top_logprobs if p.logprobs else 0}")

    # ---- accounting -------------------------------------------------------------------------
    def accounting(self) -> dict:
        return {"cost": self.cost, "cost_bound": self.cost_bound, "budget_usd": self.params.budget_usd}

    def cost(self, result: Result) -> float:
        return self.params.price.usd(result.usage.prompt_tokens, result.usage.completion_tokens,
                                     self.params.use_batch_api)

    def cost_bound(self, request: Request) -> float:
        """Dollars a request may cost at most: estimated prompt tokens plus the full output cap."""
        text = request.prompt or "".join(str(m.get("content") or "") for m in request.messages or ())
        tokens = approx_tokens(text) + 4 * len(request.messages or ())
        return self.cost(Result(usage=Usage(tokens, 1 if request.kind == "score" else request.max_new_tokens)))

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
            wrapped = schema if {"name", "schema"} <= set(schema) else {"name": "answer", "schema": schema,
                                                                        "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": wrapped}
        if p.logprobs and "logprobs" not in self._unsupported:
            body.update(logprobs=True, top_logprobs=p.top_logprobs)
        return body

    def record(self, data: Any, body: dict) -> dict:
        """The raw response as cached: the body as received, and the optional fields that were
        sent (a server may have refused response_format, so the cached answer says how it was asked)."""
        return {"body": data, "sent": {"response_format": "response_format" in body,
                                       "logprobs": "logprobs" in body}}

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
            return Result(text=text, finish_reason=finish, tokens=steps, usage=used,
                          error=f"finish_reason={finish}", structured=structured, raw=raw)
        if message.get("refusal"):
            return Result(finish_reason=finish, usage=used, error=f"refusal: {message['refusal'][:200]}",
                          structured=structured, raw=raw)
        if not isinstance(text, str) or not text.strip():
            return Result(finish_reason=finish, usage=used, error="empty answer", structured=structured,
                          raw=raw)
        return Result(text=text, finish_reason=finish, tokens=steps, usage=used, structured=structured,
                      raw=raw)

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
            retryable = is_retryable(err.status_code)
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
        return self.parse(response, request, self.record(response, body))


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
