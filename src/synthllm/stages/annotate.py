"""Stage annotate: one annotator labels the synthetic pool and a fixed gold-val audit sample (and,
with a stability variant, the pool again under the second prompt order). An intended annotator
copies each pool row's intended label and writes an audit file with no rows: gold val pairs have no
intended label, so its audit metrics say "not applicable" instead of an accuracy."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.labelling import label_by_construction, label_rows
from synthllm.quality import audit_metrics, failure_counts
from synthllm.stages._common import cache_path, entry, load_gold, params_of, parser, shot_pool


def _by_construction(args: Namespace, pool: list[dict], labels: list[str]) -> None:
    """The intended annotator's outputs: the pool labelled as intended, an empty audit."""
    done = label_by_construction(pool, args.name, labels)
    write_jsonl(done.rows[0], args.out)
    write_jsonl([], args.audit)
    write_json({**audit_metrics([], done.rows[0], labels), "run": done.run.as_dict()}, args.metrics)


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="annotator name (a key of annotator_configs)")
    p.add_argument("--pool", type=Path, required=True, help="generated pairs (.jsonl)")
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--prompts", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="annotated pool (.jsonl)")
    p.add_argument("--audit", type=Path, required=True, help="annotated gold-val sample (.jsonl)")
    p.add_argument("--metrics", type=Path, required=True)
    args = p.parse_args(argv)
    params = params_of(args)
    cfg, task, seed = params.annotator(args.name), params.task, params.annotate.seed
    pool = read_jsonl(args.pool, required=("id", "premise", "hypothesis"))
    if cfg.kind == "intended":
        return _by_construction(args, pool, task.labels)
    shots = shot_pool(args.gold, params)
    val = load_gold(args.gold, "val")
    audit = val.sample(n=min(params.annotate.audit_size, len(val)), random_state=seed)
    audit = audit.rename(columns={"label": "gold_label"}).to_dict("records")

    jobs = [("pool", pool, "default"), ("audit", audit, "default")]
    if cfg.stability_variant:
        jobs.append(("variant", pool, cfg.stability_variant))
    done = label_rows(
        args.name,
        cfg,
        [(job_rows, variant) for _, job_rows, variant in jobs],
        task,
        prompts=args.prompts,
        shots=shots,
        seed=seed,
        cache_file=cache_path(params),
        desc=f"annotate[{args.name}]",
    )
    labelled = {job: rows for (job, _, _), rows in zip(jobs, done.rows)}
    if cfg.temperature > 0:
        for job, attempts in zip(labelled, done.attempts):
            for row, k in zip(labelled[job], attempts):
                row["attempts"] = k
    if "variant" in labelled:
        for row, alt in zip(labelled["pool"], labelled["variant"]):
            row.update(
                label_variant=alt["label"],
                variant_confidence=alt["confidence"],
                variant_status=alt["status"],
                variant_reason=alt["reason"],
            )
    write_jsonl(labelled["pool"], args.out)
    write_jsonl(labelled["audit"], args.audit)
    metrics = audit_metrics(labelled["audit"], labelled["pool"], task.labels)
    if "variant" in labelled:
        metrics["variant"] = failure_counts(labelled["variant"])
    write_json({**metrics, "run": done.run.as_dict()}, args.metrics)


if __name__ == "__main__":
    main()
