"""Stage cascade: a derived annotator — cheap annotators' labels, with doubtful pool rows (and the
whole audit sample, for the cost/accuracy frontier) labelled by an expensive annotator."""

from __future__ import annotations

import argparse
from pathlib import Path

from synthllm import cascade
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.labelling import label_rows
from synthllm.quality import audit_metrics
from synthllm.stages._common import cache_path, entry, params_of, parser, shot_pool


def _aligned(folder: Path, names: list[str]) -> tuple[list[dict], list[dict]]:
    """(rows of the first annotator, per row: name -> that annotator's row for the same id)."""
    by_id = {n: {r["id"]: r for r in read_jsonl(folder / f"{n}.jsonl")} for n in names}
    first = list(by_id[names[0]].values())
    return first, [{n: by_id[n][r["id"]] for n in names} for r in first]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="cascade name (a key of params.cascades)")
    p.add_argument("--annotated", type=Path, required=True, help="folder of <annotator>.jsonl pools")
    p.add_argument("--audit", type=Path, required=True, help="folder of <annotator>.jsonl audit files")
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--prompts", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="cascade-labelled pool (.jsonl)")
    p.add_argument("--audit-out", type=Path, required=True, help="cascade-labelled audit sample (.jsonl)")
    p.add_argument("--metrics", type=Path, required=True)
    return p.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    params = params_of(args)
    cfg, task = params.cascade(args.name), params.task
    pool, pool_rows = _aligned(args.annotated, cfg.cheap)
    audit, audit_rows = _aligned(args.audit, cfg.cheap)
    share = cascade.escalation_share(cfg, len(pool))  # the audit is escalated in the same share
    up = cascade.escalate(pool_rows, cfg, cfg.threshold, share)
    escalated = [r for r, u in zip(pool, up) if u]

    asked = escalated + audit  # only escalated pool rows; all of the audit, for the frontier
    done = label_rows(
        cfg.expensive,
        params.annotator(cfg.expensive),
        [(asked, "default")],
        task,
        prompts=args.prompts,
        shots=shot_pool(args.gold, params),
        seed=params.annotate.seed,
        cache_file=cache_path(params),
        desc=f"cascade[{args.name}]",
    )
    (rows,), run = done.rows, done.run
    by_id = {r["id"]: r for r in rows[: len(escalated)]}
    exp_audit = rows[len(escalated) :]
    labelled = cascade.combine(pool_rows, up, by_id, cfg, args.name)
    labelled_audit = cascade.combine(
        audit_rows,
        cascade.escalate(audit_rows, cfg, cfg.threshold, share),
        {r["id"]: r for r in exp_audit},
        cfg,
        args.name,
    )
    write_jsonl(labelled, args.out)
    write_jsonl(labelled_audit, args.audit_out)
    write_json(
        {
            **audit_metrics(labelled_audit, labelled, task.labels),
            "escalation": {
                "pool_rows": len(pool),
                "escalated": len(escalated),
                "escalated_share": round(len(escalated) / max(1, len(pool)), 6),
                "failed": sum(r["escalation_failed"] is not None for r in labelled),
                "expensive_requests_sent": run.sent,
                "threshold": cfg.threshold,
            },
            "frontier": cascade.frontier(
                {n: [a[n] for a in audit_rows] for n in cfg.cheap}, exp_audit, cfg, args.name, share
            ),
            "cheap": cfg.cheap,
            "expensive": cfg.expensive,
            "run": run.as_dict(),
        },
        args.metrics,
    )


if __name__ == "__main__":
    main()
