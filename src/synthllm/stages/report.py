"""Stage report: results table (markdown + CSV) and the charts, for exactly the configured runs
(gold_only, and every branch × regime in params, with train.seeds) — never whatever files a folder
happens to hold from earlier configurations."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from synthllm import charts, curve_report, report
from synthllm.errors import InputDataError
from synthllm.io import read_frame, write_json
from synthllm.regimes import passes
from synthllm.stages._common import entry, params_of, parser


def _frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputDataError(
            f"{path}: a learning-curve point configured in params.yaml (curves) has no result; run `dvc repro`"
        )
    return read_frame(path)


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputDataError(
            f"{path}: the {what} is configured in params.yaml but has no result; "
            f"run `dvc repro` (or remove it from params.yaml)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--eval", type=Path, required=True, help="folder of <branch>__<regime>.json")
    p.add_argument("--predictions", type=Path, required=True, help="folder of per-item predictions")
    p.add_argument("--annotators", type=Path, required=True, help="folder of annotator metrics")
    p.add_argument("--quality", type=Path, required=True, help="annotation_quality.json")
    p.add_argument("--gold-counts", type=Path, required=True, help="gold stage's counts.json")
    p.add_argument("--curves", type=Path, required=True, help="folder of the curve stages' predictions")
    p.add_argument("--out", type=Path, required=True, help="reports folder")
    p.add_argument("--plots", type=Path, required=True, help="folder for learning-curve rows (dvc plots)")
    args = p.parse_args(argv)
    params = params_of(args)
    labels, gold_name, train = params.task.labels, params.gold.name, params.train
    runs = ["gold__gold_only"] + [f"{b}__{r}" for b in params.branches for r in params.regimes]
    metrics = {run: _load(args.eval / f"{run}.json", f"run {run}") for run in runs}
    expected_seeds = {f"seed-{s}" for s in train.seeds}
    for run, m in metrics.items():
        if set(m["seeds"]) != expected_seeds:
            raise InputDataError(
                f"{args.eval / run}.json holds seeds {sorted(m['seeds'])}, but train.seeds is "
                f"{sorted(train.seeds)}: run `dvc repro`"
            )
    predictions = {run: read_frame(args.predictions / f"{run}.jsonl") for run in runs}
    derived = [*params.aggregates, *params.cascades]
    every = {n: _load(args.annotators / f"{n}.json", f"annotator {n}") for n in [*params.annotators, *derived]}
    annotators = {b: every[b] for b in params.branches}
    table = report.results_table(metrics, predictions, labels=labels)
    comparisons = report.regime_comparisons(predictions)
    args.out.mkdir(parents=True, exist_ok=True)
    strategy = params.split.strategy
    table.insert(1, "strategy", [("–" if r == "gold_only" else strategy) for r in table["regime"]])
    table.insert(3, "passes", [passes(r, train.gold_epochs, train.synthetic_epochs) for r in table["regime"]])
    gold = json.loads(args.gold_counts.read_text(encoding="utf-8"))["train"]
    main_budget = min(params.gold.budget or gold["rows"], gold["rows"])
    points = {b: _frame(args.curves / f"budget-{b}.jsonl") for b in params.curves.budgets if b < main_budget}
    points[main_budget] = pd.concat([df.assign(run=run) for run, df in predictions.items()], ignore_index=True)
    curve = curve_report.curve_table(points)
    curve_vs = curve_report.curve_comparisons(points)
    pool = None
    if params.curves.pool_budget is not None:
        pooled = _frame(args.curves / "pool.jsonl")
        pool = curve_report.curve_table({f: g for f, g in pooled.groupby("fraction")}, key="fraction").assign(
            budget=min(params.curves.pool_budget, gold["rows"])
        )
    votes = report.aggregates_table(every, list(params.aggregates), table, list(params.regimes))
    (args.out / "results.md").write_text(
        report.markdown(
            table,
            comparisons,
            annotators,
            json.loads(args.quality.read_text(encoding="utf-8")),
            strategy,
            labels,
            gold_name,
        )
        + report.aggregates_markdown(votes, list(params.regimes), gold_name)
        + curve_report.curve_markdown(curve, curve_vs, pool, main_budget),
        encoding="utf-8",
    )
    votes.round(6).to_csv(args.out / "aggregates.csv", index=False)
    frontier = curve_report.frontier_table(
        every,
        list(params.annotators),
        {n: a.members for n, a in params.aggregates.items()},
        {n: (c.cheap, c.expensive) for n, c in params.cascades.items()},
    )
    with (args.out / "results.md").open("a", encoding="utf-8") as f:
        f.write(curve_report.frontier_markdown(frontier))
    frontier.to_csv(args.out / "frontier.csv", index=False)
    curve_report.frontier_chart(frontier, args.out / "frontier.png")
    curve.round(6).to_csv(args.out / "learning_curves.csv", index=False)
    curve_vs.round(6).to_csv(args.out / "learning_curve_comparisons.csv", index=False)
    args.plots.mkdir(parents=True, exist_ok=True)
    (args.out / "curves").mkdir(exist_ok=True)
    for branch in params.branches:
        curve_report.curve_chart(curve, branch, args.out / "curves" / f"learning_curve_{branch}.png")
        if pool is not None:
            curve_report.curve_chart(pool, branch, args.out / "curves" / f"pool_fractions_{branch}.png", x="fraction")
    for (branch, regime), g in curve.groupby(["annotator", "regime"]):
        write_json(
            g[["budget", "accuracy", "ci_low", "ci_high"]].round(6).to_dict("records"),
            args.plots / f"{branch}__{regime}.json",
        )
    (pool if pool is not None else pd.DataFrame(columns=["fraction", "budget"])).round(6).to_csv(
        args.out / "pool_fractions.csv", index=False
    )
    table.round(6).to_csv(args.out / "results.csv", index=False)
    comparisons.round(6).to_csv(args.out / "comparisons.csv", index=False)
    report.regime_chart(table, args.out / "regimes.png")
    charts.annotator_confusion_heatmaps(annotators, args.out / "annotator_confusion.png", labels)
    gold_shares = {lab: gold.get(lab, 0) / gold["rows"] for lab in labels}
    charts.label_distributions(annotators, gold_shares, args.out / "label_distributions.png", labels, gold_name)


if __name__ == "__main__":
    main()
