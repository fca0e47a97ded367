"""Annotation quality: how good one annotator is, and how far annotators agree with each other.

Per annotator: accuracy, macro-F1, confusion and calibration (ECE) on the gold-val audit sample;
label distribution, failure count and agreement with the generator's intended label on the pool.
Across annotators: pairwise Cohen's kappa, Fleiss' kappa on pairs every annotator labelled, and
annotator × annotator confusion matrices. The arithmetic lives in :mod:`synthllm.stats`; this
module only arranges rows into it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from synthllm import stats
from synthllm.aggregation import aggregate
from synthllm.errors import InputDataError
from synthllm.params import AggregateParams


def _r(x: float | None) -> float | None:
    return None if x is None or x != x else round(float(x), 6)


def failure_counts(rows: Sequence[dict]) -> dict:
    """How many rows failed, and why (reason class: 'not_json', 'http 503', ...)."""
    reasons = Counter(str(r.get("reason") or "unknown").split(":")[0] for r in rows if r["status"] != "ok")
    return {"n": len(rows), "failed": sum(reasons.values()), "failure_reasons": dict(sorted(reasons.items()))}


def confidence_summary(rows: Sequence[dict]) -> dict:
    """Which share of labelled rows carries a confidence, and from which source (annotation's
    definitions). ECE is computed on exactly these rows, never with a stand-in value."""
    ok = [r for r in rows if r["status"] == "ok"]
    sources = Counter(str(r.get("confidence_source")) for r in ok if r.get("confidence") is not None)
    with_conf = sum(sources.values())
    return {
        "confidence_coverage": _r(with_conf / len(ok)) if ok else None,
        "confidence_sources": dict(sorted(sources.items())),
    }


NO_AUDIT = (
    "not applicable: the annotator labels by construction (the generator's intended label), "
    "which gold val pairs do not have"
)


def _audit_summary(audit: Sequence[dict], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, confusion and ECE on the gold-val audit; with no audit rows (an intended
    annotator's) every score is None and ``not_applicable`` says why, never a stand-in accuracy."""
    if not audit:
        return {
            **failure_counts(audit),
            **dict.fromkeys(("accuracy", "macro_f1", "confusion", "ece"), None),
            **confidence_summary(audit),
            "not_applicable": NO_AUDIT,
        }
    gold = [r["gold_label"] for r in audit]
    pred = [r["label"] for r in audit]
    confident = [r for r in audit if r["status"] == "ok" and r.get("confidence") is not None]
    return {
        **failure_counts(audit),
        "accuracy": _r(stats.accuracy(gold, pred)),
        "macro_f1": _r(stats.macro_f1(gold, pred, list(labels))),
        "confusion": stats.confusion(gold, pred, list(labels)),
        # over the rows that have a confidence (coverage below); None when none has one
        "ece": _r(
            stats.expected_calibration_error(
                [r["confidence"] for r in confident], [r["label"] == r["gold_label"] for r in confident]
            )
        )
        if confident
        else None,
        **confidence_summary(audit),
    }


def audit_metrics(audit: Sequence[dict], pool: Sequence[dict], labels: Sequence[str]) -> dict:
    out: dict[str, Any] = {
        "audit": _audit_summary(audit, labels),
        "pool": {
            **failure_counts(pool),
            "label_distribution": {
                k: _r(v) for k, v in stats.label_distribution([r["label"] for r in pool], list(labels)).items()
            },
            **confidence_summary(pool),
        },
    }
    if pool and "intended_label" in pool[0]:
        out["pool"]["agreement_with_intended"] = _r(
            stats.accuracy([r["intended_label"] for r in pool], [r["label"] for r in pool])
        )
    if pool and "label_variant" in pool[0]:
        flips = stats.flip_rate([r["label"] for r in pool], [r["label_variant"] for r in pool])
        out["pool"]["prompt_order_flip_rate"] = {
            "overall": _r(flips["overall"]),
            "by_class": {k: _r(v) for k, v in flips["by_class"].items()},
        }
    return out


def cross_annotator(pools: Mapping[str, Sequence[dict]], categories: Sequence[str]) -> dict:
    """Agreement between annotators on the shared synthetic pool (rows aligned by id)."""
    names = sorted(pools)
    ids = sorted(set.intersection(*(set(r["id"] for r in pools[n]) for n in names)))
    by_id = {n: {r["id"]: r["label"] for r in pools[n]} for n in names}
    labels = {n: [by_id[n][i] for i in ids] for n in names}
    out: dict = {"n_shared": len(ids), "annotators": names, "pairwise_kappa": {}, "confusion": {}}
    for (a, b), k in stats.pairwise_kappa(labels).items():
        out["pairwise_kappa"][f"{a}__{b}"] = _r(k)
        out["confusion"][f"{a}__{b}"] = stats.confusion(labels[a], labels[b], list(categories))
    if len(names) >= 2:
        ratings = [[labels[n][j] for n in names] for j in range(len(ids))]
        out["fleiss_kappa"] = _r(stats.fleiss_kappa(ratings, list(categories)))
    return out


MAX_PLOT_ROWS = 10_000  # plots files live in git: a 100k-row pool is drawn from a seeded sample


def agreement_rows(
    pools: Mapping[str, Sequence[dict]], max_rows: int = MAX_PLOT_ROWS, seed: int = 0
) -> dict[tuple[str, str], list[dict]]:
    """Per annotator pair, one row per shared pair labelled by both (at most ``max_rows``, a seeded
    sample beyond that; the κ and confusion counts in the metrics use every row): ``actual`` is the
    first annotator's label, ``predicted`` the second's (the field names of dvc's confusion template)."""
    import random

    names = sorted(pools)
    by_id = {n: {r["id"]: r["label"] for r in pools[n]} for n in names}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ids = [
                k for k in sorted(set(by_id[a]) & set(by_id[b])) if by_id[a][k] is not None and by_id[b][k] is not None
            ]
            if len(ids) > max_rows:
                ids = sorted(random.Random(seed).sample(ids, max_rows))
            out[(a, b)] = [{"actual": by_id[a][k], "predicted": by_id[b][k]} for k in ids]
    return out


def vote_on_audit(audits: Mapping[str, Sequence[dict]], labels: Sequence[str]) -> dict:
    """Accuracy of the plain and confidence-weighted majority of all annotators on the audit
    sample (every annotator with an audit labels the same gold-val pairs); ties count as wrong.
    Annotators without audit rows (intended) are left out and listed; under two left, no vote."""
    names = sorted(n for n in audits if audits[n])
    out: dict = {"members": names}
    if len(audits) > len(names):
        out["without_audit"] = sorted(set(audits) - set(names))
    if len(names) < 2:
        out["unavailable"] = "fewer than two annotators labelled the audit sample"
        return out
    for key, method in (("majority", "majority"), ("weighted_majority", "confidence")):
        try:
            _, rows = aggregate(audits, audits, AggregateParams(members=names, method=method), key, labels)
        except InputDataError as err:  # some member has labels without confidence: no weighted vote
            out[f"{key}_accuracy"], out[f"{key}_unavailable"] = None, str(err).split(". Set")[0]
            continue
        out["n"] = len(rows)
        out[f"{key}_accuracy"] = _r(stats.accuracy([r["gold_label"] for r in rows], [r["label"] for r in rows]))
    return out
