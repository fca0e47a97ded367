"""The report's learning curves and cost/accuracy frontier: tables, significance and charts.

Learning curves: accuracy per gold budget (or pool fraction) × branch × regime with two-level
bootstrap intervals, and warm-up minus gold-only at each budget, Holm-adjusted over the curve.
Frontier: audit accuracy against the cost of 1,000 pool rows for every single annotator, vote and
cascade threshold. Charts are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas
(never the global pyplot state). This module does not read files or decide what is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from synthllm import stats
from synthllm.reporting.tables import correctness_matrix

# ---- learning curves ------------------------------------------------------------------------------


def curve_table(
    points: Mapping[float, pd.DataFrame] | Mapping[int, pd.DataFrame],
    n_resamples: int = 1000,
    seed: int = 0,
    key: str = "budget",
) -> pd.DataFrame:
    """Accuracy per point (gold budget, or pool fraction) × branch × regime: mean over seeds and test
    items, two-level bootstrap 95 % CI. ``points`` maps a point to its per-seed predictions (with a
    ``run`` column)."""
    rows = []
    for point, preds in sorted(points.items()):
        for run, group in preds.groupby("run", sort=True):
            annotator, regime = run.split("__")
            boot = stats.two_level_bootstrap(correctness_matrix(group), n_resamples=n_resamples, seed=seed)
            rows.append(
                {
                    key: point,
                    "annotator": annotator,
                    "regime": regime,
                    "seeds": int(group["seed"].nunique()),
                    "accuracy": boot["estimate"],
                    "ci_low": boot["low"],
                    "ci_high": boot["high"],
                }
            )
    return pd.DataFrame(rows, columns=[key, "annotator", "regime", "seeds", "accuracy", "ci_low", "ci_high"])


def curve_comparisons(
    points: Mapping[int, pd.DataFrame],
    a: str = "warmup",
    b: str = "gold_only",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """At each budget and for each branch: regime ``a`` minus ``b`` (two-level bootstrap), Holm
    adjusted over the whole curve family."""
    rows = []
    for budget, preds in sorted(points.items()):
        runs = {run: g for run, g in preds.groupby("run")}
        base = runs.get(f"gold__{b}") if b == "gold_only" else None
        for run, group in sorted(runs.items()):
            annotator, regime = run.split("__")
            other = base if base is not None else runs.get(f"{annotator}__{b}")
            if regime != a or other is None:
                continue
            boot = stats.two_level_bootstrap(
                correctness_matrix(group), n_resamples=n_resamples, seed=seed, other=correctness_matrix(other)
            )
            rows.append(
                {
                    "budget": int(budget),
                    "annotator": annotator,
                    "a": a,
                    "b": b,
                    "delta_accuracy": boot["estimate"],
                    "ci_low": boot["low"],
                    "ci_high": boot["high"],
                    "p_value": boot["p_value"],
                }
            )
    table = pd.DataFrame(
        rows, columns=["budget", "annotator", "a", "b", "delta_accuracy", "ci_low", "ci_high", "p_value"]
    )
    table["p_holm"] = stats.holm(table["p_value"].tolist()) if len(table) else []
    table["significant"] = table["p_holm"] <= alpha
    return table


# ---- cost / accuracy frontier ---------------------------------------------------------------------


def frontier_table(
    metrics: Mapping[str, dict],
    annotators: Sequence[str],
    aggregates: Mapping[str, Sequence[str]],
    cascades: Mapping[str, tuple[Sequence[str], str]],
) -> pd.DataFrame:
    """Audit accuracy against the cost of labelling 1,000 pool rows (list-price dollars and measured
    compute seconds) for every single annotator, every vote (its members' costs) and every cascade
    at each of its frontier thresholds. ``cascades`` maps a cascade to (cheap members, expensive)."""
    from synthllm.cascade import Cost, priced, request_cost, row_cost

    def cost_of(names: Sequence[str]) -> Cost:
        parts = [row_cost(metrics[n]) for n in names]
        secs = [c.seconds for c in parts if c.seconds is not None]
        return Cost(sum(c.usd for c in parts), None if len(secs) < len(parts) else sum(secs))

    def point(name: str, kind: str, members: Sequence[str]) -> dict:
        c = cost_of(members)
        return {
            "annotator": name,
            "kind": kind,
            "threshold": None,
            "escalated_share": None,
            "audit_accuracy": metrics[name]["audit"]["accuracy"],
            "usd_per_1000": round(1000 * c.usd, 6),
            "seconds_per_1000": None if c.seconds is None else round(1000 * c.seconds, 3),
        }

    # an annotator without audit (intended) has no accuracy, so no point on the frontier
    rows = [point(n, "single", [n]) for n in annotators if metrics[n]["audit"]["accuracy"] is not None]
    rows += [point(name, "vote", members) for name, members in aggregates.items()]
    for name, (cheap, expensive) in cascades.items():
        exp = request_cost((metrics.get(expensive) or metrics[name])["run"])
        for pt in priced(metrics[name]["frontier"], [row_cost(metrics[n]) for n in cheap], exp):
            rows.append({**pt, "kind": "cascade"})
    return pd.DataFrame(
        rows,
        columns=[
            "annotator",
            "kind",
            "threshold",
            "escalated_share",
            "audit_accuracy",
            "usd_per_1000",
            "seconds_per_1000",
        ],
    )
