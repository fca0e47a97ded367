"""Annotation cascades: cheap annotators label every row; doubtful rows go to an expensive one.

A row is *escalated* when the first cheap annotator's confidence is below the threshold (or absent,
or its row failed), when the cheap annotators disagree (``on_disagreement``), or when the first
cheap annotator's label flips under its hypothesis-first prompt (``on_flip``); at most
``max_escalated`` pool rows, least confident first — and the same *share* of any other set of rows
(the audit sample, the frontier), so that the audit describes the cascade the pool got. An escalated
row takes the expensive annotator's label when it gave one; if it failed, the row keeps the cheap label and says so
(``escalation_failed``) — it never silently becomes a guess.

Every annotator also labels the gold-val audit sample, so the cascade's accuracy at *any*
threshold can be computed on the audit without another call: :func:`frontier` does, with the cost
of 1,000 pool rows at list price (each annotator's measured dollars per request × requests per row)
and measured compute seconds where the run sent requests. The same function gives each single
annotator's and each vote's point. This module does not send requests or read files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from synthllm.params import CascadeParams

KEEP = ("label", "confidence", "confidence_source", "status", "reason")


def escalation_share(cfg: CascadeParams, pool_rows: int) -> float | None:
    """``max_escalated`` as the share of the pool it allows (None: no cap)."""
    if cfg.max_escalated is None:
        return None
    return min(1.0, cfg.max_escalated / pool_rows) if pool_rows else 0.0


def escalate(
    rows: Sequence[Mapping[str, dict]], cfg: CascadeParams, threshold: float, share: float | None
) -> list[bool]:
    """Which rows (each: cheap annotator name -> its row) go to the expensive annotator: at most
    ``share`` of them (:func:`escalation_share`), least confident first."""
    first = cfg.cheap[0]
    doubt = []
    for by_name in rows:
        lead = by_name[first]
        conf = lead.get("confidence")
        d = lead.get("status") != "ok" or conf is None or conf < threshold
        if cfg.on_disagreement and len({by_name[n].get("label") for n in cfg.cheap}) > 1:
            d = True
        if cfg.on_flip and lead.get("label_variant") != lead.get("label"):
            d = True
        doubt.append(d)
    limit = None if share is None else round(share * len(rows))
    if limit is not None and sum(doubt) > limit:
        order = sorted((i for i, d in enumerate(doubt) if d), key=lambda i: rows[i][first].get("confidence") or 0.0)
        keep = set(order[:limit])
        doubt = [i in keep for i in range(len(doubt))]
    return doubt


def combine(
    rows: Sequence[Mapping[str, dict]],
    escalated: Sequence[bool],
    expensive: Mapping[str, dict],
    cfg: CascadeParams,
    name: str,
) -> list[dict]:
    """The cascade's rows: the first cheap annotator's, or the expensive one's where escalated."""
    out = []
    for by_name, up in zip(rows, escalated):
        lead = by_name[cfg.cheap[0]]
        base = {
            k: v
            for k, v in lead.items()
            if k not in KEEP
            and not k.startswith("variant_")
            and k not in ("annotator", "label_variant", "labels_seen", "attempts")
        }
        row = {
            **base,
            **{k: lead.get(k) for k in KEEP},
            "annotator": name,
            "escalated": up,
            "label_from": cfg.cheap[0],
            "escalation_failed": None,
        }
        if up:
            exp = expensive.get(lead["id"])
            if exp is not None and exp["status"] == "ok":
                row.update({k: exp.get(k) for k in KEEP}, label_from=cfg.expensive)
            else:
                row["escalation_failed"] = (exp or {}).get("reason") or "no answer from the expensive annotator"
        out.append(row)
    return out


@dataclass(frozen=True)
class Cost:
    """List-price dollars and measured compute seconds of labelling one pool row."""

    usd: float
    seconds: float | None


def request_cost(run: Mapping) -> Cost:
    """From a run's statistics: list-price dollars per request, and seconds per request where the
    run sent any (a run served by the cache measured no time)."""
    seconds = run["wall_s"] / run["sent"] if run.get("sent") else None
    return Cost(run.get("usd_per_request", 0.0), seconds)


def row_cost(metrics: Mapping) -> Cost:
    """One pool row of an annotator: its request cost × requests per row (2 with a stability
    variant, whose second prompt order labels the pool again)."""
    per_row = 2 if "prompt_order_flip_rate" in metrics.get("pool", {}) else 1
    one = request_cost(metrics.get("run") or {})
    return Cost(one.usd * per_row, None if one.seconds is None else one.seconds * per_row)


def _accuracy(rows: Sequence[dict]) -> float:
    return sum(r.get("label") == r["gold_label"] for r in rows) / len(rows) if rows else float("nan")


def frontier(
    audits: Mapping[str, list[dict]], expensive_audit: list[dict], cfg: CascadeParams, name: str, share: float | None
) -> list[dict]:
    """Audit accuracy and escalated share of the cascade at every frontier threshold, from labels
    every annotator already gave on the audit sample (no call is made); ``share``: the pool's cap."""
    by_id = {n: {r["id"]: r for r in rows} for n, rows in audits.items()}
    ids = [r["id"] for r in audits[cfg.cheap[0]]]
    rows = [{n: by_id[n][i] for n in cfg.cheap} for i in ids]
    expensive = {r["id"]: r for r in expensive_audit}
    points = []
    for t in cfg.frontier_thresholds:
        up = escalate(rows, cfg, t, share)
        points.append(
            {
                "annotator": name,
                "threshold": t,
                "escalated_share": round(sum(up) / len(up), 6) if up else 0.0,
                "audit_accuracy": round(_accuracy(combine(rows, up, expensive, cfg, name)), 6),
            }
        )
    return points


def priced(points: Sequence[dict], cheap: Sequence[Cost], expensive: Cost) -> list[dict]:
    """Frontier points with the cost of 1,000 pool rows: every cheap annotator's row cost, plus the
    escalated share of one expensive request."""
    usd = sum(c.usd for c in cheap)
    measured = [c.seconds for c in cheap] + [expensive.seconds]
    seconds = [s for s in measured if s is not None]
    return [
        {
            **pt,
            "usd_per_1000": round(1000 * (usd + pt["escalated_share"] * expensive.usd), 6),
            "seconds_per_1000": None
            if len(seconds) < len(measured)
            else round(1000 * (sum(seconds[:-1]) + pt["escalated_share"] * seconds[-1]), 3),
        }
        for pt in points
    ]
