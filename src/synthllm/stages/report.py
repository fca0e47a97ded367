"""Stage report: results table (markdown + CSV) and the regime chart, from evaluate/annotate outputs."""

from __future__ import annotations

import json
from pathlib import Path

from synthllm import report
from synthllm.io import read_frame
from synthllm.stages._common import entry, parser


def _jsons(folder: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))}


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--eval", type=Path, required=True, help="folder of <annotator>__<regime>.json")
    p.add_argument("--predictions", type=Path, required=True, help="folder of per-item predictions")
    p.add_argument("--annotators", type=Path, required=True, help="folder of annotator metrics")
    p.add_argument("--out", type=Path, required=True, help="reports folder")
    args = p.parse_args(argv)
    metrics = _jsons(args.eval)
    predictions = {run: read_frame(args.predictions / f"{run}.jsonl") for run in metrics}
    table = report.results_table(metrics, predictions)
    comparisons = report.regime_comparisons(predictions)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report.markdown(table, comparisons, _jsons(args.annotators)),
                                         encoding="utf-8")
    table.round(6).to_csv(args.out / "results.csv", index=False)
    comparisons.round(6).to_csv(args.out / "comparisons.csv", index=False)
    report.regime_chart(table, args.out / "regimes.png")


if __name__ == "__main__":
    main()
