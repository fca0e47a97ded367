"""Cache, de-duplication, progress and usage accounting, written once for every backend.

The cache is a SQLite file outside DVC outputs (DVC deletes a stage's outputs before re-running it).
Every completed request is committed as soon as the backend yields it, so a killed run loses at most
the requests in flight; a re-run sends only what is missing. Failed results are not cached (they are
retried next run). One writer at a time per cache file is supported; concurrent writers from several
processes are serialised by SQLite's lock but are not a supported set-up.

With a budget, requests are sent in rounds: each round is the longest prefix whose worst-case cost
(``cost_bound``) fits in what is left of the budget after the actual cost of earlier rounds, so the
cap is never knowingly crossed. When nothing more fits the run raises :class:`BudgetExceeded`; every
completed result is already cached, so a re-run with a larger budget sends only the rest.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from synthllm.backends.base import Backend, Request, Result
from synthllm.errors import BackendError, BudgetExceeded


class RequestCache:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._db = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
            self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, Result]:
        if self._db is None:
            return {}
        found: dict[str, Result] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            q = f"SELECT key, result FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            for key, payload in self._db.execute(q, chunk):
                found[key] = Result.from_json(json.loads(payload))
        return found

    def put(self, key: str, result: Result) -> None:
        if self._db is None:
            return
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)",
                         (key, json.dumps(result.to_json(), ensure_ascii=False)))
        self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


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

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


CostFn = Callable[[Result], float]
CostBoundFn = Callable[[Request], float]


def _affordable(requests: Sequence[Request], start: int, left_usd: float, bound: CostBoundFn) -> int:
    """End of the longest run of requests from ``start`` whose summed worst-case cost fits."""
    end, total = start, 0.0
    while end < len(requests) and total + bound(requests[end]) <= left_usd:
        total += bound(requests[end])
        end += 1
    return end


def run_requests(backend: Backend, requests: Sequence[Request], cache: RequestCache | None = None,
                 *, desc: str = "requests", cost: CostFn | None = None,
                 progress: bool = True, budget_usd: float | None = None,
                 cost_bound: CostBoundFn | None = None) -> tuple[list[Result], RunStats]:
    """Answer every request, from the cache where possible; results come back in input order.

    ``budget_usd`` caps the dollars sent in this call (it needs ``cost`` and ``cost_bound``)."""
    backend.check(requests)
    if budget_usd is not None and (cost is None or cost_bound is None):
        raise BackendError("budget_usd needs both cost= and cost_bound= (e.g. backend.cost and "
                           "backend.cost_bound of an OpenAIBackend)")
    cache = cache if cache is not None else RequestCache(None)  # an empty cache is falsy (__len__)
    started = time.perf_counter()
    stats = RunStats(requests=len(requests))
    keys = [r.cache_key(backend.identity) for r in requests]
    cached = cache.get_many(keys)
    results: list[Result | None] = [cached.get(k) for k in keys]
    stats.cache_hits = sum(r is not None for r in results)

    # identical requests are sent once and shared
    todo: dict[str, list[int]] = {}
    for i, (key, res) in enumerate(zip(keys, results)):
        if res is None:
            todo.setdefault(key, []).append(i)
    unique = [(key, idxs) for key, idxs in todo.items()]
    pending = [requests[idxs[0]] for _, idxs in unique]
    sent_upto = 0
    with tqdm(total=len(pending), desc=desc, unit="req", disable=not progress or not pending) as bar:
        while sent_upto < len(pending):
            end = len(pending) if budget_usd is None else _affordable(
                pending, sent_upto, budget_usd - stats.cost_usd, cost_bound)
            if end == sent_upto:
                break
            for j, result in backend.run(pending[sent_upto:end]):
                key, idxs = unique[sent_upto + j]
                stats.sent += 1
                if result.ok:
                    cache.put(key, result)
                for i in idxs:
                    results[i] = result
                stats.prompt_tokens += result.usage.prompt_tokens
                stats.completion_tokens += result.usage.completion_tokens
                if cost is not None:
                    stats.cost_usd += cost(result)
                bar.update(1)
            sent_upto = end
    if sent_upto < len(pending):
        raise BudgetExceeded(
            f"{desc}: spent ${stats.cost_usd:.4f} of the ${budget_usd:.4f} budget; {len(pending) - sent_upto} "
            f"requests not sent (the next could cost up to ${cost_bound(pending[sent_upto]):.4f}). The "
            f"{stats.sent} completed results are cached: raise budget_usd and re-run to send only the rest")
    for res in results:
        if res is None or not res.ok:
            stats.failures += 1
            kind = ((res.error if res is not None else "not answered") or "unknown").split(":")[0]
            stats.failure_reasons[kind] = stats.failure_reasons.get(kind, 0) + 1
    stats.wall_s = time.perf_counter() - started
    final = [r if r is not None else Result(error="not answered: the backend stopped early")
             for r in results]
    return final, stats
