"""The OpenAI protocol without a transport: request bodies, answers, identities and token bounds.

Both OpenAI transports speak it: :class:`~synthllm.backends.openai_http.OpenAIBackend` (online
requests over aiohttp) and :class:`~synthllm.backends.batch_api.BatchAPIBackend` (the Batch API).
:func:`body` builds the JSON body of a :class:`Request`; :func:`parse` reads a chat or completions
answer into a :class:`Result`, and :func:`decode` re-reads the raw record (:func:`record`) the
runner caches, so the cache holds the same thing whichever transport asked. :func:`token_bound`
is the one worst-case token count of a request, behind both the budget cap (``cost_bound``) and the
Batch API's enqueued-token limit. :class:`OpenAIProtocolBackend` holds what the two backends share:
the params, the API key (read from the named environment variable, kept out of identity, results
and error text), identity, prices and the budget's accounting. Nothing here opens a connection.

:func:`approx_tokens` counts tokens with tiktoken's ``o200k_base`` when it is installed (it is not a
dependency), otherwise by a heuristic: one token per 4 ASCII characters and one per 2 other
characters, rounded up (byte-level BPE vocabularies spend about 2-3 Persian characters per token,
so the heuristic errs on the expensive side, the safe side for a budget).
"""

from __future__ import annotations

import codecs
import math
import os
from typing import Any

from synthllm.backends.base import Backend, Request, Result, TokenChoice, TokenStep, Usage
from synthllm.backends.http_errors import Failure
from synthllm.errors import BackendError
from synthllm.params import OpenAIBackendParams

OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"  # local servers accept any key; the SDK refuses an empty one
TOKENS_PER_MESSAGE = 4  # a chat message's role and separators, on top of its content

try:  # optional: exact counts for OpenAI's current vocabularies
    import tiktoken

    _ENCODING = tiktoken.get_encoding("o200k_base")
except Exception:  # not installed, or its vocabulary file cannot be fetched offline
    _ENCODING = None
TOKEN_COUNTER = "tiktoken o200k_base" if _ENCODING is not None else None  # None: the chars heuristic


def approx_tokens(text: str) -> int:
    if _ENCODING is not None:
        return len(_ENCODING.encode(text))
    ascii_chars = sum(c.isascii() for c in text)
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars) / 2)


def token_bound(request: Request) -> Usage:
    """The most tokens a request may use: its estimated prompt (plus ``TOKENS_PER_MESSAGE`` per chat
    message) and its full output cap (one token for a ``score`` request). The budget cap prices it;
    the Batch API's enqueued-token limit counts its sum."""
    text = request.prompt or "".join(str(m.get("content") or "") for m in request.messages or ())
    prompt = approx_tokens(text) + TOKENS_PER_MESSAGE * len(request.messages or ())
    return Usage(prompt, 1 if request.kind == "score" else request.max_new_tokens)


def url_path(endpoint: str) -> str:
    return "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"


def identity(params: OpenAIBackendParams) -> str:
    """The served model and the settings that shape its answers; not the URLs (replicas of one
    served model share cached answers), never the key. The same for both transports."""
    p = params
    where = "served" if p.base_urls else "openai-api"
    return (
        f"{where}:{p.served_identity or p.model}|{p.endpoint}|json_schema={p.structured_output}"
        f"|top_logprobs={p.top_logprobs if p.logprobs else 0}"
    )


def ledger(params: OpenAIBackendParams) -> str:
    """The spending ledger's scope: the served model, whichever stage or run asks it."""
    return f"{'served' if params.base_urls else 'openai-api'}:{params.served_identity or params.model}"


def body(params: OpenAIBackendParams, request: Request, unsupported: frozenset[str] | set[str] = frozenset()) -> dict:
    """The JSON body of a request, without the optional fields in ``unsupported`` (ones a server
    rejected)."""
    p, body = params, {"model": params.model, "seed": request.seed}
    if request.kind == "score":  # one token; the choices are read off its alternatives
        body.update(prompt=request.prompt, max_tokens=1, temperature=0.0)
        if "logprobs" not in unsupported:
            body["logprobs"] = p.top_logprobs
        return body
    body.update(max_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.kind == "complete":
        if p.logprobs and "logprobs" not in unsupported:
            body["logprobs"] = p.top_logprobs
        return {**body, "prompt": request.prompt}
    body["messages"] = [dict(m) for m in request.messages or ()]
    schema = request.json_schema
    if schema and p.structured_output and "response_format" not in unsupported:
        wrapped = schema if {"name", "schema"} <= set(schema) else {"name": "answer", "schema": schema, "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": wrapped}
    if p.logprobs and "logprobs" not in unsupported:
        body.update(logprobs=True, top_logprobs=p.top_logprobs)
    return body


def record(data: Any, body: dict) -> dict:
    """The raw response as cached: the body as received, and the optional fields that were
    sent (a server may have refused response_format, so the cached answer says how it was asked)."""
    return {"body": data, "sent": {"response_format": "response_format" in body, "logprobs": "logprobs" in body}}


def decode(raw: dict, request: Request) -> Result:
    try:
        return parse(raw["body"], request, raw)
    except Failure as failure:  # a body today's parser cannot read: that row fails, the run goes on
        return Result(error=failure.reason, raw=raw)


def parse(data: Any, request: Request, raw: dict | None = None) -> Result:
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


class OpenAIProtocolBackend(Backend):
    """What both OpenAI transports share: params, key, served kinds, identity, prices and the
    budget's accounting, and decoding cached answers. Subclasses implement ``run``."""

    def __init__(self, params: OpenAIBackendParams):
        self.params = params
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

    @property
    def identity(self) -> str:
        return identity(self.params)

    @property
    def url_path(self) -> str:
        return url_path(self.params.endpoint)

    @property
    def ledger(self) -> str:
        return ledger(self.params)

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
        """Dollars a request may cost at most: its :func:`token_bound`, priced."""
        return self.cost(Result(usage=token_bound(request)))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != PLACEHOLDER_KEY else text

    def decode(self, raw: dict, request: Request) -> Result:
        return decode(raw, request)
