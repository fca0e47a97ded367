"""Stage report: results table (markdown + CSV) and the charts, for exactly the configured runs
(gold_only, and every branch × regime in params, with train.seeds) — never whatever files a folder
happens to hold from earlier configurations."""

from __future__ import annotations

import json
from pathlib import Path

from synthllm.reporting import build, curves, inputs, markdown, tables
from synthllm.stages._common import entry, params_of, parser


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
    labels, gold_name, cp, regimes = params.task.labels, params.gold.name, params.curves, list(params.regimes)
    runs = ["gold__gold_only"] + [f"{b}__{r}" for b in params.branches for r in params.regimes]
    metrics, predictions = inputs.runs(args.eval, args.predictions, runs, params.train.seeds)
    derived = [*params.aggregates, *params.cascades]
    every = {
        n: inputs.load_json(args.annotators / f"{n}.json", f"annotator {n}") for n in [*params.annotators, *derived]
    }
    annotators = {b: every[b] for b in params.branches}
    quality = json.loads(args.quality.read_text(encoding="utf-8"))
    gold = json.loads(args.gold_counts.read_text(encoding="utf-8"))["train"]
    main_budget = min(params.gold.budget or gold["rows"], gold["rows"])
    points, pooled, pool_budget = inputs.curve_points(
        args.curves, cp.budgets, main_budget, predictions, cp.pool_budget, gold["rows"]
    )

    table, comparisons = build.results(metrics, predictions, labels, params.split.strategy, params.train)
    curve, curve_vs, pool = build.learning_curves(points, pooled, pool_budget)
    votes = tables.aggregates_table(every, list(params.aggregates), table, regimes)
    members = {n: a.members for n, a in params.aggregates.items()}
    cascades = {n: (c.cheap, c.expensive) for n, c in params.cascades.items()}
    frontier = curves.frontier_table(every, list(params.annotators), members, cascades)
    text = markdown.document(
        table, comparisons, annotators, quality, params.split.strategy, labels, gold_name, votes, regimes,
        (curve, curve_vs, pool, main_budget), frontier,
    )  # fmt: skip
    report = build.Report(table, comparisons, votes, curve, curve_vs, pool, frontier, text)
    build.write(report, args.out, args.plots, params.branches)
    build.draw(report, args.out, annotators, gold, labels, gold_name)


if __name__ == "__main__":
    main()
