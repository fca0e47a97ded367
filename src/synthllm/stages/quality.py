"""Stage quality: agreement between the configured annotators on the shared synthetic pool."""

from __future__ import annotations

from pathlib import Path

from synthllm.io import read_jsonl, write_json
from synthllm.quality import agreement_rows, cross_annotator, vote_on_audit
from synthllm.stages._common import entry, params_of, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--annotated", type=Path, required=True, help="folder of <annotator>.jsonl files")
    p.add_argument("--audit", type=Path, required=True, help="folder of <annotator>.jsonl audit files")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument(
        "--plots", type=Path, required=True, help="folder for <a>__<b>.json rows (dvc plots, template confusion)"
    )
    args = p.parse_args(argv)
    params = params_of(args)
    labels, names = params.task.labels, sorted(params.annotators)  # the configured ones, not a glob
    pools = {n: read_jsonl(args.annotated / f"{n}.jsonl") for n in names}
    audits = {n: read_jsonl(args.audit / f"{n}.jsonl") for n in names}
    if len(pools) < 2:
        write_json({"annotators": sorted(pools)}, args.metrics)
        args.plots.mkdir(parents=True, exist_ok=True)
        return
    write_json({**cross_annotator(pools, labels), "vote_on_audit": vote_on_audit(audits, labels)}, args.metrics)
    args.plots.mkdir(parents=True, exist_ok=True)
    for (a, b), rows in agreement_rows(pools).items():
        write_json(rows, args.plots / f"{a}__{b}.json")


if __name__ == "__main__":
    main()
