"""Cache, de-duplication, progress, usage accounting and the spending cap, written once for every
backend.

The cache is a SQLite file outside DVC outputs (DVC deletes a stage's outputs before re-running it).
It stores each request's **raw response** (``Result.raw``: for HTTP, the response body as received),
never a parsed label: reading a cached entry decodes it again with the backend's current code, so a
decoding or parsing fix re-derives every row with no request sent. Every answered request is
committed as soon as the backend yields it, so a killed run loses at most the requests in flight; a
re-run sends only what is missing. Requests that got no answer (transport failures: 5xx or 429
after retries, timeouts, refused connections, 401/404, a failed batch) are not cached, and more of
them than ``max_unanswered`` (a share of the run's requests, default 0) stop the run with
:class:`UnansweredRequests` — how many, per reason — once every answer that did come back is cached:
the stage exits non-zero, DVC records nothing, and the next ``dvc repro`` sends only those. An
answer that *was* received but is unusable (cut by ``length``, empty, off-form) is cached like any
other and becomes a failed row with its reason: it was paid for, and at temperature 0 asking again
gives the same answer. One writer at a time per cache file is supported.

**Budget.** Beside the cache, a ledger (table ``spend``) records the dollars of every paid answer
under a scope: the served model (``ledger``, e.g. ``openai-api:gpt-4o-mini``), so the annotate and
cascade stages that ask one annotator share one ledger (the run's ``desc`` where no ledger is named).
``budget_usd`` caps the scope's total over every stage and run that used this cache — the
experiment, not one invocation. Requests are sent in
rounds: each round is the longest prefix whose worst-case cost (``cost_bound``) fits in what the
ledger says is left, so the cap is never knowingly crossed. When nothing more fits the run raises
:class:`BudgetExceeded` naming what was spent; every completed answer is already cached.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthllm.backends.base import Backend, Request, Result
from synthllm.errors import BackendError, BudgetExceeded, UnansweredRequests


class RequestCache:
    """Raw responses by request key, and the spending ledger. ``path=None``: an in-memory cache
    for one process (nothing persists)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path or ":memory:", timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
        # raw bodies (with 20 alternatives per token) are kilobytes each: stored zlib-compressed
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, raw BLOB NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "scope TEXT NOT NULL, key TEXT NOT NULL, usd REAL NOT NULL, at REAL NOT NULL)"
        )
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            q = f"SELECT key, raw FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
            for key, payload in self._db.execute(q, chunk):
                found[key] = json.loads(zlib.decompress(payload))
        return found

    def put(self, key: str, raw: dict, spend: tuple[str, float] | None = None) -> None:
        """Store one raw response (and, when it cost money, its ledger line) in one commit."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?)",
            (key, zlib.compress(json.dumps(raw, ensure_ascii=False).encode("utf-8"), 1)),
        )
        if spend is not None:
            self.charge(spend[0], key, spend[1], commit=False)
        self._db.commit()

    def charge(self, scope: str, key: str, usd: float, commit: bool = True) -> None:
        self._db.execute(
            "INSERT INTO spend (scope, key, usd, at) VALUES (?, ?, ?, ?)", (scope, key, float(usd), time.time())
        )
        if commit:
            self._db.commit()

    def spent(self, scope: str) -> float:
        """Dollars recorded under ``scope`` by every run that used this cache."""
        return float(
            self._db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend WHERE scope = ?", (scope,)).fetchone()[0]
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()


@dataclass
class RunStats:
    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0  # failures without any answer from the model (transport), a subset of failures
    # what one answer costs at list price, over every result (cached ones too): traceable per-row
    # costs for the report, whatever part of the run the cache served
    usd_per_request: float = 0.0

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def add(self, other: RunStats) -> RunStats:
        """Request totals of two runs (e.g. a first pass and its re-asks). The failure tallies are
        left to :meth:`tally`: which rows failed depends on the final answers, not on either run."""
        merged = RunStats(
            **{
                k: getattr(self, k) + getattr(other, k)
                for k in ("requests", "cache_hits", "sent", "prompt_tokens", "completion_tokens", "cost_usd", "wall_s")
            }
        )
        n = self.requests + other.requests
        merged.usd_per_request = (
            (self.usd_per_request * self.requests + other.usd_per_request * other.requests) / n if n else 0.0
        )
        return merged

    def tally(self, errors: Sequence[str | None], unanswered: int) -> RunStats:
        """These totals with the failure tallies of the final answers (one error or None per row)."""
        reasons = kind_counts(errors)
        return replace(
            self, failures=sum(reasons.values()), failure_reasons=dict(sorted(reasons.items())), unanswered=unanswered
        )


CostFn = Callable[[Result], float]
CostBoundFn = Callable[[Request], float]


def _affordable(requests: Sequence[Request], start: int, left_usd: float, bound: CostBoundFn) -> int:
    """End of the longest run of requests from ``start`` whose summed worst-case cost fits."""
    end, total = start, 0.0
    while end < len(requests) and total + bound(requests[end]) <= left_usd:
        total += bound(requests[end])
        end += 1
    return end


def failure_kind(error: str) -> str:
    """The reason class of an error text ('http 503: ...' -> 'http 503'), for counting."""
    return (error or "unknown").split(":")[0]


def kind_counts(errors: Sequence[str | None]) -> dict[str, int]:
    """How many of ``errors`` (None: no error) fall in each reason class."""
    counts: dict[str, int] = {}
    for error in errors:
        if error is not None:
            counts[failure_kind(error)] = counts.get(failure_kind(error), 0) + 1
    return counts


@dataclass
class _Answers:
    """Per request: the reduced result, its error (None: ok), whether it was answered, and whether
    the transport got no answer at all from the model."""

    n: int
    reduce: Callable[[Result], Any]
    cost: CostFn | None
    kept: list = field(init=False)
    errors: list[str | None] = field(init=False)
    answered: list[bool] = field(init=False)
    no_answer: list[bool] = field(init=False)
    usd_total: float = 0.0

    def __post_init__(self) -> None:
        self.kept, self.errors = [None] * self.n, [None] * self.n
        self.answered, self.no_answer = [False] * self.n, [False] * self.n

    def store(self, i: int, result: Result) -> None:
        self.kept[i], self.answered[i] = self.reduce(result), True
        self.errors[i] = None if result.ok else (result.error or "unknown error")
        self.no_answer[i] = not (result.ok or result.raw is not None)
        if self.cost is not None:
            self.usd_total += self.cost(result)


def _unanswered_by_key(keys: list[str], answered: list[bool]) -> list[tuple[str, list[int]]]:
    """Unanswered rows grouped by cache key, in first-seen order: identical requests are sent once and shared."""
    todo: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if not answered[i]:
            todo.setdefault(key, []).append(i)
    return list(todo.items())


def _from_cache(
    backend: Backend, requests: Sequence[Request], keys: list[str], cache: RequestCache, answers: _Answers
) -> None:
    """Cached answers, decoded and reduced a chunk at a time: never every raw body at once."""
    for start in range(0, len(keys), 1000):
        chunk = range(start, min(start + 1000, len(keys)))
        cached = cache.get_many([keys[i] for i in chunk])
        for i in chunk:
            if keys[i] in cached:
                answers.store(i, backend.decode(cached[keys[i]], requests[i]))
        del cached


@dataclass
class _Sending:
    """What the send loop needs besides the requests: the cost functions, the cap and the ledger."""

    desc: str
    progress: bool
    cost: CostFn | None
    cost_bound: CostBoundFn | None
    budget_usd: float | None
    scope: str
    spent_before: float


def _send(
    backend: Backend,
    unique: list[tuple[str, list[int]]],
    pending: list[Request],
    cache: RequestCache,
    answers: _Answers,
    stats: RunStats,
    how: _Sending,
) -> int:
    """Send the pending requests (each unique one once), within the budget; returns how many were sent."""
    sent_upto = 0
    with tqdm(total=len(pending), desc=how.desc, unit="req", disable=not how.progress or not pending) as bar:
        while sent_upto < len(pending):
            end = (
                len(pending)
                if how.budget_usd is None or how.cost_bound is None
                else _affordable(pending, sent_upto, how.budget_usd - how.spent_before - stats.cost_usd, how.cost_bound)
            )
            if end == sent_upto:
                break
            for j, result in backend.run(pending[sent_upto:end]):
                key, idxs = unique[sent_upto + j]
                stats.sent += 1
                usd = how.cost(result) if how.cost is not None else 0.0
                stats.cost_usd += usd
                if result.raw is not None:
                    cache.put(key, result.raw, (how.scope, usd) if usd else None)
                elif usd:
                    cache.charge(how.scope, key, usd)
                for i in idxs:
                    answers.store(i, result)
                stats.prompt_tokens += result.usage.prompt_tokens
                stats.completion_tokens += result.usage.completion_tokens
                bar.update(1)
            sent_upto = end
    return sent_upto


def _budget_message(how: _Sending, stats: RunStats, left: int, next_bound: float, cache: RequestCache) -> str:
    total = how.spent_before + stats.cost_usd
    return (
        f"{how.desc}: ${total:.4f} spent on {how.scope} in all stages and runs so far (${stats.cost_usd:.4f} in "
        f"this one), against "
        f"budget_usd ${how.budget_usd:.4f}; {left} requests not sent (the next could "
        f"cost up to ${next_bound:.4f}). The ledger is in "
        f"{cache.path or 'memory'}. The {stats.sent} answers received are cached: raise budget_usd of "
        f"this backend in params.yaml and re-run to send only the rest"
    )


def run_requests(
    backend: Backend,
    requests: Sequence[Request],
    cache: RequestCache | None = None,
    *,
    desc: str = "requests",
    cost: CostFn | None = None,
    progress: bool = True,
    budget_usd: float | None = None,
    cost_bound: CostBoundFn | None = None,
    keep: Callable[[Result], Any] | None = None,
    max_unanswered: float = 0.0,
    unanswered_param: str = "max_unanswered",
    ledger: str | None = None,
) -> tuple[list, RunStats]:
    """Answer every request, from the cache where possible; results come back in input order.

    ``keep`` reduces each result the moment it is decoded or answered (e.g. to a parsed label), so
    a run holds one reduced value per request rather than every response body: what makes a
    100k-row annotate run fit in memory. ``budget_usd`` caps the dollars the ledger records under
    ``ledger`` (default ``desc``) across stages and runs (it needs ``cost`` and ``cost_bound``). More
    unanswered requests than the share ``max_unanswered`` raise :class:`UnansweredRequests`
    (``unanswered_param`` names the params key in its message) after every answer is cached."""
    backend.check(requests)
    if budget_usd is not None and (cost is None or cost_bound is None):
        raise BackendError(
            "budget_usd needs both cost= and cost_bound= (e.g. backend.cost and backend.cost_bound of an OpenAIBackend)"
        )
    cache = cache if cache is not None else RequestCache(None)  # an empty cache is falsy (__len__)
    started = time.perf_counter()
    stats = RunStats(requests=len(requests))
    keys = [r.cache_key(backend.identity) for r in requests]
    answers = _Answers(len(requests), keep if keep is not None else (lambda r: r), cost)
    _from_cache(backend, requests, keys, cache, answers)
    stats.cache_hits = sum(answers.answered)

    unique = _unanswered_by_key(keys, answers.answered)
    pending = [requests[idxs[0]] for _, idxs in unique]
    scope = ledger or desc
    spent_before = cache.spent(scope) if budget_usd is not None else 0.0
    how = _Sending(desc, progress, cost, cost_bound, budget_usd, scope, spent_before)
    sent_upto = _send(backend, unique, pending, cache, answers, stats, how)
    if sent_upto < len(pending):
        assert cost_bound is not None  # only a budget stops sending early, and it needs cost_bound
        raise BudgetExceeded(
            _budget_message(how, stats, len(pending) - sent_upto, cost_bound(pending[sent_upto]), cache)
        )
    for i in range(len(requests)):
        if not answers.answered[i]:
            answers.store(i, Result(error="not answered: the backend stopped early"))
    stats = stats.tally(answers.errors, sum(answers.no_answer))
    stats.wall_s = time.perf_counter() - started
    if cost is not None and requests:
        stats.usd_per_request = answers.usd_total / len(requests)
    if stats.unanswered > max_unanswered * len(requests):
        raise UnansweredRequests(
            unanswered_message(desc, stats, answers.errors, answers.no_answer, max_unanswered, unanswered_param)
        )
    return answers.kept, stats


def unanswered_message(
    desc: str,
    stats: RunStats,
    errors: Sequence[str | None],
    no_answer: Sequence[bool],
    max_unanswered: float,
    param: str,
) -> str:
    reasons = kind_counts([error or "unknown" if missing else None for error, missing in zip(errors, no_answer)])
    per_reason = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return (
        f"{desc}: {stats.unanswered} of {stats.requests} requests got no answer ({per_reason}); "
        f"{param} accepts {max_unanswered:.1%}. The {stats.requests - stats.unanswered} answered ones are "
        f"cached: re-run `dvc repro` to send only those {stats.unanswered} (or raise {param})"
    )
