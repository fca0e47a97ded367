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
from synthllm.report import correctness_matrix

# ---- learning curves ------------------------------------------------------------------------------


def curve_table(
    points: Mapping[float, pd.DataFrame], n_resamples: int = 1000, seed: int = 0, key: str = "budget"
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


def curve_markdown(table: pd.DataFrame, comparisons: pd.DataFrame, pool: pd.DataFrame | None, main_budget: int) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [
        "",
        "## Learning curves: test accuracy by gold budget (%)",
        "",
        f"Each budget re-trains the classifier annotator and every regime on that many gold pairs (nested "
        f"subsets); {main_budget} is the main run above. Mean over seeds and test items "
        f"{{two-level bootstrap 95 % CI}}.",
        "",
    ]
    wide = table.assign(cell=[f"{pct(r.accuracy)} {{{pct(r.ci_low)}, {pct(r.ci_high)}}}" for r in table.itertuples()])
    budgets = sorted(table["budget"].unique())
    lines += [
        "| annotator | regime | " + " | ".join(str(b) for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for (annotator, regime), g in wide.groupby(["annotator", "regime"], sort=True):
        cells = dict(zip(g["budget"], g["cell"]))
        lines.append(f"| {annotator} | {regime} | " + " | ".join(cells.get(b, "–") for b in budgets) + " |")
    wins = comparisons[comparisons["significant"] & (comparisons["delta_accuracy"] > 0)]
    losses = comparisons[comparisons["significant"] & (comparisons["delta_accuracy"] < 0)]
    lines += [
        "",
        f"Warm-up vs gold-only (two-level bootstrap, Holm over the {len(comparisons)} budget × annotator "
        "comparisons): "
        + (
            "warm-up is significantly better at "
            + ", ".join(f"{r.budget} ({r.annotator}, +{pct(r.delta_accuracy)})" for r in wins.itertuples())
            if len(wins)
            else "warm-up is significantly better at no budget"
        )
        + (
            "; significantly worse at "
            + ", ".join(f"{r.budget} ({r.annotator}, {pct(r.delta_accuracy)})" for r in losses.itertuples())
            if len(losses)
            else ""
        )
        + ".",
    ]
    if pool is not None and len(pool):
        lines += [
            "",
            f"## Synthetic-pool fractions at gold budget {int(pool['budget'].iloc[0])} (%)",
            "",
            "| annotator | regime | " + " | ".join(f"{f:g}" for f in sorted(pool["fraction"].unique())) + " |",
            "|---|---|" + "---|" * pool["fraction"].nunique(),
        ]
        for (annotator, regime), g in pool.groupby(["annotator", "regime"], sort=True):
            cells = dict(
                zip(g["fraction"], (f"{pct(r.accuracy)} {{{pct(r.ci_low)}, {pct(r.ci_high)}}}" for r in g.itertuples()))
            )
            lines.append(
                f"| {annotator} | {regime} | "
                + " | ".join(cells.get(f, "–") for f in sorted(pool["fraction"].unique()))
                + " |"
            )
    return "\n".join(lines) + "\n"


def curve_chart(table: pd.DataFrame, annotator: str, path, x: str = "budget") -> None:
    """One PNG: accuracy against ``x`` for each regime of one branch (gold_only drawn in each)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sub = table[(table["annotator"] == annotator) | (table["regime"] == "gold_only")]
    for regime, g in sub.groupby("regime", sort=True):
        g = g.sort_values(x)
        ax.plot(g[x], 100 * g["accuracy"], marker="o", label=regime)
        ax.fill_between(g[x], 100 * g["ci_low"], 100 * g["ci_high"], alpha=0.15)
    if x == "budget":
        ax.set_xscale("log")
    ax.set_xlabel("gold train pairs" if x == "budget" else "share of the synthetic pool")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{annotator} labels: accuracy vs {'gold budget' if x == 'budget' else 'pool fraction'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
        secs = [c.seconds for c in parts]
        return Cost(sum(c.usd for c in parts), None if any(x is None for x in secs) else sum(secs))

    rows = []
    for name in annotators:
        c = cost_of([name])
        rows.append(
            {
                "annotator": name,
                "kind": "single",
                "threshold": None,
                "escalated_share": None,
                "audit_accuracy": metrics[name]["audit"]["accuracy"],
                "usd_per_1000": round(1000 * c.usd, 6),
                "seconds_per_1000": None if c.seconds is None else round(1000 * c.seconds, 3),
            }
        )
    for name, members in aggregates.items():
        c = cost_of(members)
        rows.append(
            {
                "annotator": name,
                "kind": "vote",
                "threshold": None,
                "escalated_share": None,
                "audit_accuracy": metrics[name]["audit"]["accuracy"],
                "usd_per_1000": round(1000 * c.usd, 6),
                "seconds_per_1000": None if c.seconds is None else round(1000 * c.seconds, 3),
            }
        )
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


def frontier_markdown(table: pd.DataFrame) -> str:
    fmt = lambda v, spec: "–" if v is None or v != v else format(v, spec)  # noqa: E731
    lines = [
        "",
        "## Cost / accuracy frontier (gold-val audit sample)",
        "",
        "Cost of labelling 1,000 pool rows: list-price dollars (params `price`; local models are $0) and "
        "measured compute seconds (– where the cache served the run). A cascade's points come from labels "
        "every annotator already gave on the audit sample: no extra calls.",
        "",
        "| annotator | kind | threshold | escalated | audit accuracy | $ / 1,000 rows | seconds / 1,000 rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.annotator} | {r.kind} | {fmt(r.threshold, 'g')} | {fmt(r.escalated_share, '.1%')} | "
            f"{100 * r.audit_accuracy:.1f} % | {fmt(r.usd_per_1000, '.4f')} | {fmt(r.seconds_per_1000, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def frontier_chart(table: pd.DataFrame, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    use_usd = bool((table["usd_per_1000"] > 0).any())
    x = "usd_per_1000" if use_usd else "seconds_per_1000"
    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, marker in (("single", "o"), ("vote", "s")):
        sub = table[(table["kind"] == kind) & table[x].notna()]
        ax.scatter(sub[x], 100 * sub["audit_accuracy"], marker=marker, label=kind)
        for r in sub.itertuples():
            ax.annotate(
                r.annotator,
                (getattr(r, x), 100 * r.audit_accuracy),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for name, g in table[(table["kind"] == "cascade") & table[x].notna()].groupby("annotator"):
        ax.plot(g[x], 100 * g["audit_accuracy"], marker=".", label=f"{name} (thresholds)")
    ax.set_xlabel("list-price $ per 1,000 pool rows" if use_usd else "compute seconds per 1,000 pool rows")
    ax.set_ylabel("audit accuracy (%)")
    ax.set_title("Annotation cost vs accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
