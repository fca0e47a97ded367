"""Stage aggregate: a derived annotator that votes over configured annotators' labels, and the
comparison of every vote method on the same members (the report's aggregates table)."""

from __future__ import annotations

from pathlib import Path

from synthllm.aggregation import aggregate, compare_methods
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.quality import audit_metrics
from synthllm.stages._common import entry, params_of, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="aggregate name (a key of params.aggregates)")
    p.add_argument("--annotated", type=Path, required=True, help="folder of <annotator>.jsonl pools")
    p.add_argument("--audit", type=Path, required=True, help="folder of <annotator>.jsonl audit files")
    p.add_argument("--out", type=Path, required=True, help="voted pool (.jsonl)")
    p.add_argument("--audit-out", type=Path, required=True, help="voted audit sample (.jsonl)")
    p.add_argument("--metrics", type=Path, required=True)
    args = p.parse_args(argv)
    params = params_of(args)
    cfg = params.aggregate(args.name)
    pools = {m: read_jsonl(args.annotated / f"{m}.jsonl") for m in cfg.members}
    audits = {m: read_jsonl(args.audit / f"{m}.jsonl") for m in cfg.members}
    labels = params.task.labels
    pool, audit = aggregate(pools, audits, cfg, args.name, labels)
    write_jsonl(pool, args.out)
    write_jsonl(audit, args.audit_out)
    write_json(
        {**audit_metrics(audit, pool, labels), "aggregate": compare_methods(pools, audits, cfg, args.name, labels)},
        args.metrics,
    )


if __name__ == "__main__":
    main()
