"""Annotating through a real OpenAI-compatible server: chat + JSON schema vs completions + label-word
scoring, on llama.cpp's own server (``xllamacpp``) serving Gemma 3 270M on this machine.

For each way of asking it labels the same gold-val audit sample (``annotate.audit_size`` pairs,
``annotate.seed``) and prints requests/s, accuracy, failures, ECE and how many labels the server
listed among its top alternatives at the deciding token. No request cache: every request is sent.

    python benchmarks/llamacpp_annotators.py --gold data/gold [--n 150] [--slots 1] [--shots 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from synthllm import stats
from synthllm.annotation import answer_format, build_requests, parse_result
from synthllm.backends import run_requests
from synthllm.backends.openai_http import OpenAIBackend
from synthllm.io import read_frame, read_jsonl
from synthllm.params import AnnotatorParams, OpenAIBackendParams, load_params
from synthllm.prompts import load_annotate_prompt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llama_server import gemma_gguf, llama_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--gold", type=Path, default=Path("data/gold"))
    ap.add_argument("--n", type=int, default=None, help="audit pairs (default: annotate.audit_size)")
    ap.add_argument("--slots", type=int, default=1, help="llama.cpp parallel slots (= client concurrency)")
    ap.add_argument("--shots", type=int, default=3, help="few-shot examples in the scoring prompt")
    args = ap.parse_args()
    params = load_params(args.params)
    prompt = load_annotate_prompt(Path("prompts"), "fa/nli/annotate", params.task)
    train = read_jsonl(args.gold / "train.jsonl")
    val = read_frame(args.gold / "val.jsonl")
    pairs = val.sample(n=args.n or params.annotate.audit_size, random_state=params.annotate.seed).to_dict("records")
    gold = [p["label"] for p in pairs]
    with tempfile.TemporaryDirectory() as tmp, llama_server(gemma_gguf(Path(tmp)), slots=args.slots) as url:
        common = dict(model="gemma-3-270m", base_urls=[url], concurrency=args.slots, timeout_s=300)
        ways = {
            "chat + JSON schema": AnnotatorParams(kind="llm", method="instruct", backend=OpenAIBackendParams(**common)),
            "completions + label-word logprobs": AnnotatorParams(
                kind="llm",
                method="logprob",
                shots=args.shots,
                backend=OpenAIBackendParams(endpoint="completions", **common),
            ),
        }
        print(f"{len(pairs)} gold-val pairs, llama.cpp with {args.slots} slot(s), Gemma 3 270M Q4_K_M")
        print(
            f"{'way':36} {'req/s':>6} {'acc':>6} {'macroF1':>7} {'failed':>6} {'ECE':>6} {'mean conf':>9} labels listed"
        )
        for name, cfg in ways.items():
            fmt = answer_format(cfg, prompt, params.task.labels, params.task.name)
            requests = build_requests(
                pairs, cfg, prompt, train, params.annotate.seed, labels=params.task.labels, task=params.task.name
            )
            started = time.perf_counter()
            results, _ = run_requests(OpenAIBackend(cfg.backend), requests, progress=False)
            rate = len(requests) / (time.perf_counter() - started)
            answers = [parse_result(r, fmt) for r in results]
            pred = [a.label for a in answers]
            scored = [(a.confidence, a.label == g) for a, g in zip(answers, gold) if a.confidence is not None]
            ece = stats.expected_calibration_error(*zip(*scored)) if scored else float("nan")
            seen = {k: sum(a.labels_seen == k for a in answers) for k in (1, 2, 3)}
            print(
                f"{name:36} {rate:6.2f} {stats.accuracy(gold, pred):6.3f} "
                f"{stats.macro_f1(gold, pred, params.task.labels):7.3f} {sum(p is None for p in pred):6d} "
                f"{ece:6.3f} {sum(c for c, _ in scored) / max(1, len(scored)):9.3f} "
                f"1:{seen[1]} 2:{seen[2]} 3:{seen[3]}"
            )


if __name__ == "__main__":
    main()
