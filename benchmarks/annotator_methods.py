"""Which way should the offline LLM annotator label: label-word log-probabilities or a written answer?

Runs both methods of the configured LLM annotator (default: ``gemma``) on the same gold-val sample
and prints accuracy, macro-F1, failures and pairs/s for each (the request cache is off).

    python benchmarks/annotator_methods.py --annotator gemma --n 150
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from synthllm import stats
from synthllm.annotation import answer_format, build_requests, parse_result
from synthllm.backends import make_backend, run_requests
from synthllm.io import read_frame, read_jsonl
from synthllm.params import load_params
from synthllm.prompts import load_annotate_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--annotator", default="gemma")
    ap.add_argument("--gold", type=Path, default=Path("data/gold"))
    ap.add_argument("--n", type=int, default=150)
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = params.annotator_configs[args.annotator]
    prompt = load_annotate_prompt(Path("prompts"), cfg.prompt, params.task)
    train = read_jsonl(args.gold / "train.jsonl")
    val = read_frame(args.gold / "val.jsonl").sample(n=args.n, random_state=params.annotate.seed)
    pairs = val.to_dict("records")
    labels = params.task.labels
    backend = make_backend(cfg.backend)
    for method in ("logprob", "instruct"):
        variant = cfg.model_copy(update={"method": method})
        fmt = answer_format(variant, prompt, labels, params.task.name)
        requests = build_requests(
            pairs, variant, prompt, train, params.annotate.seed, labels=labels, task=params.task.name
        )
        started = time.perf_counter()
        results, run = run_requests(backend, requests, None, progress=False)
        wall = time.perf_counter() - started
        pred = [parse_result(r, fmt).label for r in results]
        gold = [p["label"] for p in pairs]
        print(
            f"method={method:8s} n={len(pred)} accuracy={stats.accuracy(gold, pred):.3f} "
            f"macro_f1={stats.macro_f1(gold, pred, labels):.3f} failed={sum(p is None for p in pred)} "
            f"pairs_per_s={len(pred) / wall:.2f} prompt_tokens={run.prompt_tokens}"
        )


if __name__ == "__main__":
    main()
