"""Stage report: results table (markdown + CSV) and the regime chart, from evaluate/annotate outputs."""

from __future__ import annotations

import json
from pathlib import Path

from synthllm import charts, report
from synthllm.io import read_frame
from synthllm.stages._common import entry, params_of, parser


def _jsons(folder: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))}


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--eval", type=Path, required=True, help="folder of <annotator>__<regime>.json")
    p.add_argument("--predictions", type=Path, required=True, help="folder of per-item predictions")
    p.add_argument("--annotators", type=Path, required=True, help="folder of annotator metrics")
    p.add_argument("--quality", type=Path, required=True, help="annotation_quality.json")
    p.add_argument("--gold-counts", type=Path, required=True, help="gold stage's counts.json")
    p.add_argument("--out", type=Path, required=True, help="reports folder")
    args = p.parse_args(argv)
    metrics = _jsons(args.eval)
    predictions = {run: read_frame(args.predictions / f"{run}.jsonl") for run in metrics}
    annotators = _jsons(args.annotators)
    params = params_of(args)
    labels, gold_name = params.task.labels, params.gold.name
    table = report.results_table(metrics, predictions, labels=labels)
    comparisons = report.regime_comparisons(predictions)
    args.out.mkdir(parents=True, exist_ok=True)
    strategy = params.split.strategy
    table.insert(1, "strategy", [("–" if r == "gold_only" else strategy) for r in table["regime"]])
    (args.out / "results.md").write_text(report.markdown(
        table, comparisons, annotators, json.loads(args.quality.read_text(encoding="utf-8")), strategy,
        labels, gold_name),
                                         encoding="utf-8")
    table.round(6).to_csv(args.out / "results.csv", index=False)
    comparisons.round(6).to_csv(args.out / "comparisons.csv", index=False)
    report.regime_chart(table, args.out / "regimes.png")
    charts.annotator_confusion_heatmaps(annotators, args.out / "annotator_confusion.png", labels)
    gold = json.loads(args.gold_counts.read_text(encoding="utf-8"))["train"]
    gold_shares = {lab: gold.get(lab, 0) / gold["rows"] for lab in labels}
    charts.label_distributions(annotators, gold_shares, args.out / "label_distributions.png", labels,
                               gold_name)


if __name__ == "__main__":
    main()
