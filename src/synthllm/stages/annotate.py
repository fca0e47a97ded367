"""Stage annotate: one annotator labels the synthetic pool and a fixed gold-val audit sample."""

from __future__ import annotations

from pathlib import Path

from synthllm import annotation
from synthllm.backends import RequestCache, run_requests
from synthllm.errors import ParamsError
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.prompts import load_annotate_prompt
from synthllm.quality import audit_metrics
from synthllm.stages._common import cache_path, entry, load_gold, params_of, parser


def _backend(cfg, state_dir: Path):
    if cfg.kind == "classifier":
        from synthllm.backends.classifier import ClassifierBackend

        return ClassifierBackend(cfg.model_dir)
    from synthllm.backends import make_backend

    return make_backend(cfg.backend, state_dir=state_dir)


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
        raise ParamsError(f"annotator {args.name!r} is not in annotator_configs "
                          f"(known: {sorted(params.annotator_configs)})")
    cfg = params.annotator_configs[args.name]
    task = params.task
    prompt = None if cfg.kind == "classifier" else load_annotate_prompt(args.prompts, cfg.prompt, task)
    pool = read_jsonl(args.pool, required=("id", "premise", "hypothesis"))
    train = load_gold(args.gold, "train").to_dict("records")
    val = load_gold(args.gold, "val")
    audit = val.sample(n=min(params.annotate.audit_size, len(val)), random_state=params.annotate.seed)
    audit = audit.rename(columns={"label": "gold_label"}).to_dict("records")

    jobs = [("pool", pool, "default"), ("audit", audit, "default")]
    if cfg.stability_variant:
        jobs.append(("variant", pool, cfg.stability_variant))
    requests = [annotation.build_requests(rows, cfg, prompt, train, params.annotate.seed, variant,
                                          task.labels, task.name) for _, rows, variant in jobs]
    backend = _backend(cfg, cache_path(params).parent)
    cache = RequestCache(cache_path(params))
    try:
        results, run = run_requests(backend, [r for rs in requests for r in rs], cache,
                                    desc=f"annotate[{args.name}]", **backend.accounting())
    finally:
        cache.close()
    labelled, start = {}, 0
    for (job, rows, _), rs in zip(jobs, requests):
        labelled[job] = annotation.annotate_rows(rows, results[start:start + len(rs)], prompt,
                                                 args.name, task.labels)
        start += len(rs)
    if "variant" in labelled:
        for row, alt in zip(labelled["pool"], labelled["variant"]):
            row["label_variant"] = alt["label"]
    write_jsonl(labelled["pool"], args.out)
    write_jsonl(labelled["audit"], args.audit)
    write_json({**audit_metrics(labelled["audit"], labelled["pool"], task.labels),
                "run": run.as_dict()}, args.metrics)


if __name__ == "__main__":
    main()
