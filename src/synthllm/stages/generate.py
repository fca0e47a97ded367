"""Stage generate: the small model writes one hypothesis per gold-train premise × intended label
(pair tasks) or one text per prompt seed × intended label (single-text tasks)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from synthllm import generation
from synthllm.backends import RequestCache, make_backend, run_requests
from synthllm.io import write_json, write_jsonl
from synthllm.prompts import load_generate_prompt
from synthllm.stages._common import cache_path, entry, load_gold, params_of, parser, shot_pool
from synthllm.text import TextProcessor


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--gold", type=Path, required=True, help="gold folder (train/val/test.jsonl)")
    p.add_argument("--prompts", type=Path, required=True, help="prompts root folder")
    p.add_argument("--out", type=Path, required=True, help="generated pairs (.jsonl)")
    p.add_argument("--stats", type=Path, required=True, help="filter counts (.json)")
    p.add_argument(
        "--run-stats",
        type=Path,
        required=True,
        help="wall time, tokens/s, cache hits (.json; kept apart so that timing noise "
        "never invalidates stages that depend on the counts)",
    )
    args = p.parse_args(argv)
    params = params_of(args)
    cfg, task, labels = params.generate, params.task, params.generate_labels
    tp = TextProcessor.for_task(task)
    prompt = load_generate_prompt(args.prompts, cfg.prompt, labels, task)
    train = load_gold(args.gold, "train").to_dict("records")  # premises: unlabelled text, all of train
    shots = shot_pool(args.gold, params)  # labelled examples: only from the budget's shot pool
    blocked = generation.blocked_texts((load_gold(args.gold, s).to_dict("records") for s in ("val", "test")), tp)
    if task.input == "pair":
        premises, leaked = generation.select_premises(train, cfg.num_premises, cfg.seed, blocked, tp)
    else:
        premises, leaked = generation.prompt_seeds(cfg.num_premises), 0
    requests, meta = generation.plan_requests(premises, shots, prompt, cfg, labels)

    cache = RequestCache(cache_path(params))
    backend = make_backend(cfg.backend, state_dir=cache_path(params).parent)
    try:
        # the filters read text, finish_reason and ok only: no response body outlives its request
        results, run = run_requests(
            backend,
            requests,
            cache,
            desc="generate",
            keep=lambda r: replace(r, raw=None, tokens=None),
            max_unanswered=cfg.max_unanswered,
            unanswered_param="generate.max_unanswered",
            **backend.accounting(),
        )
    finally:
        cache.close()
    rows, counts = generation.filter_generations(meta, results, cfg.filters, blocked, backend.identity, tp)
    write_jsonl(rows, args.out)
    tokens_per_s = run.completion_tokens / run.wall_s if run.sent and run.wall_s else None
    write_json({"premises": len(premises), "premises_skipped_leakage": leaked, **counts}, args.stats)
    write_json(
        {**run.as_dict(), "completion_tokens_per_s": tokens_per_s, "batch_size": getattr(backend, "batch_size", None)},
        args.run_stats,
    )


if __name__ == "__main__":
    main()
