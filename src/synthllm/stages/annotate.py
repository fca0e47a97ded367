"""Stage annotate: one annotator labels the synthetic pool and a fixed gold-val audit sample (and,
with a stability variant, the pool again under the second prompt order)."""

from __future__ import annotations

from pathlib import Path

from synthllm import annotation
from synthllm.backends import RequestCache, run_requests
from synthllm.backends.annotator import annotator_backend
from synthllm.errors import ParamsError
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.prompts import load_annotate_prompt
from synthllm.quality import audit_metrics, failure_counts
from synthllm.stages._common import cache_path, entry, load_gold, params_of, parser, shot_pool


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
    if args.name not in params.annotator_configs:
        raise ParamsError(
            f"annotator {args.name!r} is not in annotator_configs (known: {sorted(params.annotator_configs)})"
        )
    cfg, task, seed = params.annotator_configs[args.name], params.task, params.annotate.seed
    prompt = None if cfg.kind == "classifier" else load_annotate_prompt(args.prompts, cfg.prompt, task)
    fmt = annotation.answer_format(cfg, prompt, task.labels, task.name)
    pool = read_jsonl(args.pool, required=("id", "premise", "hypothesis"))
    shots = shot_pool(args.gold, params)
    val = load_gold(args.gold, "val")
    audit = val.sample(n=min(params.annotate.audit_size, len(val)), random_state=seed)
    audit = audit.rename(columns={"label": "gold_label"}).to_dict("records")

    jobs = [("pool", pool, "default"), ("audit", audit, "default")]
    if cfg.stability_variant:
        jobs.append(("variant", pool, cfg.stability_variant))

    def build(attempt: int):
        return [
            r
            for _, job_rows, variant in jobs
            for r in annotation.build_requests(
                job_rows, cfg, prompt, shots, seed, variant, task.labels, task.name, attempt
            )
        ]

    backend = annotator_backend(cfg, cache_path(params).parent)
    cache = RequestCache(cache_path(params))
    try:
        answers, attempts, run = annotation.ask_until_parsed(
            build,
            lambda reqs, keep: run_requests(
                backend,
                reqs,
                cache,
                desc=f"annotate[{args.name}]",
                keep=keep,
                max_unanswered=cfg.max_unanswered,
                unanswered_param=f"annotator_configs.{args.name}.max_unanswered",
                **backend.accounting(),
            ),
            fmt,
            cfg.parse_retries if cfg.temperature > 0 else 0,
        )
    finally:
        cache.close()
    labelled, start = {}, 0
    for job, job_rows, _ in jobs:
        n = len(job_rows)
        labelled[job] = annotation.annotate_rows(job_rows, answers[start : start + n], args.name)
        if cfg.temperature > 0:
            for row, k in zip(labelled[job], attempts[start : start + n]):
                row["attempts"] = k
        start += n
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
    write_json({**metrics, "run": run.as_dict()}, args.metrics)


if __name__ == "__main__":
    main()
