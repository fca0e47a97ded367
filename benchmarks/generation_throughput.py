"""Generation throughput of the local transformers backend: batch 1 vs batched, same prompts.

Uses the real generate prompts (gold-train premises, the configured shots) and the saved generator
model, with the request cache off. Prints completion tokens/s per batch size.

    python benchmarks/generation_throughput.py --model models/generator --gold data/gold \
        --requests 8 --batch-sizes 1,8,30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from synthllm.backends import run_requests
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.generation import plan_requests, select_premises
from synthllm.io import read_jsonl
from synthllm.params import load_params
from synthllm.prompts import load_generate_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=Path("models/generator"))
    ap.add_argument("--gold", type=Path, default=Path("data/gold"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--requests", type=int, default=8, help="requests per batch size (at least the batch)")
    ap.add_argument("--batch-sizes", default="1,8,30")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    params = load_params(args.params)
    cfg, labels = params.generate, params.generate_labels
    train = read_jsonl(args.gold / "train.jsonl")
    prompt = load_generate_prompt(Path("prompts"), cfg.prompt, labels, params.task)
    backend = TransformersBackend(args.model, dtype=args.dtype)
    print(f"model={args.model} dtype={args.dtype} shots={cfg.shots} max_new_tokens={cfg.max_new_tokens}")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        n = max(args.requests, bs)
        premises, _ = select_premises(train, (n + 2) // 3, seed=bs, blocked=set())
        requests, _ = plan_requests(premises, train, prompt, cfg, labels)
        backend.batch_size = bs
        started = time.perf_counter()
        _, stats = run_requests(backend, requests[:n], None, progress=False)
        wall = time.perf_counter() - started
        print(
            f"batch={bs:3d} requests={n:3d} prompt_tokens={stats.prompt_tokens:6d} "
            f"completion_tokens={stats.completion_tokens:5d} wall_s={wall:7.1f} "
            f"completion_tokens_per_s={stats.completion_tokens / wall:6.2f} "
            f"requests_per_s={n / wall:5.2f}"
        )


if __name__ == "__main__":
    main()
