"""Building every report output from loaded inputs, and writing them: results.md (once, whole),
the CSVs, the learning-curve rows for dvc plots and the PNGs, in a fixed order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synthllm.io import write_json
from synthllm.regimes import passes
from synthllm.reporting import charts, curves, tables


@dataclass
class Report:
    table: pd.DataFrame
    comparisons: pd.DataFrame
    votes: pd.DataFrame
    curve: pd.DataFrame
    curve_vs: pd.DataFrame
    pool: pd.DataFrame | None
    frontier: pd.DataFrame
    text: str


def results(metrics, predictions, labels, strategy: str, train) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results table (with strategy and passes columns) and the regime comparisons."""
    table = tables.results_table(metrics, predictions, labels=labels)
    comparisons = tables.regime_comparisons(predictions)
    table.insert(1, "strategy", [("–" if r == "gold_only" else strategy) for r in table["regime"]])
    table.insert(3, "passes", [passes(r, train.gold_epochs, train.synthetic_epochs) for r in table["regime"]])
    return table, comparisons


def learning_curves(
    points: Mapping[int, pd.DataFrame], pooled: pd.DataFrame | None, pool_budget: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Curve table and comparisons over gold budgets, and the pool-fraction table (None when off)."""
    curve = curves.curve_table(points)
    curve_vs = curves.curve_comparisons(points)
    pool = None
    if pooled is not None:
        pool = curves.curve_table({f: g for f, g in pooled.groupby("fraction")}, key="fraction").assign(
            budget=pool_budget
        )
    return curve, curve_vs, pool


def write(report: Report, out: Path, plots: Path, branches: Iterable[str]) -> None:
    """results.md, the CSVs, the curve charts and the dvc-plots rows (the other charts: :func:`draw`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report.text, encoding="utf-8")
    report.votes.round(6).to_csv(out / "aggregates.csv", index=False)
    report.frontier.to_csv(out / "frontier.csv", index=False)
    charts.frontier_chart(report.frontier, out / "frontier.png")
    report.curve.round(6).to_csv(out / "learning_curves.csv", index=False)
    report.curve_vs.round(6).to_csv(out / "learning_curve_comparisons.csv", index=False)
    plots.mkdir(parents=True, exist_ok=True)
    (out / "curves").mkdir(exist_ok=True)
    for branch in branches:
        charts.curve_chart(report.curve, branch, out / "curves" / f"learning_curve_{branch}.png")
        if report.pool is not None:
            charts.curve_chart(report.pool, branch, out / "curves" / f"pool_fractions_{branch}.png", x="fraction")
    for (branch, regime), g in report.curve.groupby(["annotator", "regime"]):
        write_json(
            g[["budget", "accuracy", "ci_low", "ci_high"]].round(6).to_dict("records"),
            plots / f"{branch}__{regime}.json",
        )
    (report.pool if report.pool is not None else pd.DataFrame(columns=["fraction", "budget"])).round(6).to_csv(
        out / "pool_fractions.csv", index=False
    )
    report.table.round(6).to_csv(out / "results.csv", index=False)
    report.comparisons.round(6).to_csv(out / "comparisons.csv", index=False)


def draw(
    report: Report,
    out: Path,
    annotators: Mapping[str, dict],
    gold: Mapping[str, int],
    labels: Sequence[str],
    gold_name: str,
) -> None:
    """The regime, confusion and label-distribution charts."""
    charts.regime_chart(report.table, out / "regimes.png")
    charts.annotator_confusion_heatmaps(annotators, out / "annotator_confusion.png", labels)
    gold_shares = {lab: gold.get(lab, 0) / gold["rows"] for lab in labels}
    charts.label_distributions(annotators, gold_shares, out / "label_distributions.png", labels, gold_name)
