"""Local inference against the hardware bound, one run, same prompts (issue 19's benchmark).

Engines, on the offline default's own workloads:
- ``this engine``: this project's local backend (``backends/transformers_local.py``): the slot
  engine (continuous batching, packed prefills) on the default's generate requests, and packed
  passes scoring ``annotate@gemma``'s requests, once with each row's own few-shot examples (the
  default before issue 19) and once with one draw shared by every row (the default since: the
  examples' keys and values are computed once);
- ``transformers @REV`` (``--before``): the same backend module as it was at git revision REV (by
  default the last commit before issue 19's engine work), at that revision's defaults (float32,
  generate batch 30, scoring batch 16), on the same requests in the same process: before and after
  on one machine;
- ``llama.cpp``: llama.cpp's own OpenAI-compatible server (``xllamacpp``), the same Gemma 3 270M
  GGUF, on the same generate requests through this project's HTTP backend, at each slot count;
- the **bound**, measured in the same process: torch matmuls at the model's linear-layer shapes
  (fp32 and bf16) turned into tokens/s for prefill (many tokens per matmul, the 262k-vocabulary
  head computed for the last position of each prompt only) and for decode (one token per row per
  step, the head computed for every row). Attention and the softmax are left out, so the bound
  is optimistic.

It prints one table (markdown) and writes it with ``--out``. Which kernels torch ran is printed
(CPU capability, oneDNN/MKL availability); the CPU model differs between machines.

    python benchmarks/local_inference.py --generate 60 --score 96 --slots 1,2 \
        --out benchmarks/results/local_inference.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from synthllm import generation
from synthllm.annotation import build_requests
from synthllm.backends import make_backend, run_requests
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.calls import Request
from synthllm.io import read_jsonl
from synthllm.params import OpenAIBackendParams, load_params
from synthllm.prompts import load_annotate_prompt, load_generate_prompt
from synthllm.stages._common import load_gold, shot_pool
from synthllm.text import TextProcessor

ROOT = Path(__file__).resolve().parents[1]
# the last commit before issue 19 changed the local engine (sampler, stops, batch shapes, bf16)
BEFORE = "809cc69"
ENGINE = "src/synthllm/backends/transformers_local.py"


@dataclass
class Row:
    engine: str
    workload: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    cut: int = 0  # answered, but not usable as they stand (e.g. finish_reason=length)
    dtype: str = "fp32"  # the bound it is held against (llama.cpp's q4 GGUF: fp32's)
    same_alone: str = "–"  # generate: rows whose text is unchanged when re-run in small batches
    computed_tokens: int | None = None  # prompt tokens run through the model (a shared prefix once)

    def cells(self, bound: dict[str, tuple[float, float]], before: dict[str, float]) -> list[str]:
        ptps, ctps = self.prompt_tokens / self.wall_s, self.completion_tokens / self.wall_s
        run = (self.computed_tokens if self.computed_tokens is not None else self.prompt_tokens) / self.wall_s
        prefill, decode = bound[self.dtype]
        scoring = self.workload.startswith("score")
        speedup = before.get(self.workload.split(" ")[0])
        return [
            self.engine,
            self.workload,
            str(self.requests),
            f"{self.wall_s:.1f}",
            f"{self.requests / self.wall_s:.2f}",
            f"{self.requests / self.wall_s / speedup:.1f}x" if speedup else "–",
            f"{ptps:.0f}",
            f"{run:.0f}" if self.computed_tokens is not None else "–",
            f"{ctps:.1f}",
            str(self.cut),
            f"{100 * run / prefill:.0f} % ({self.dtype})" if scoring else "–",
            f"{100 * ctps / decode:.0f} % ({self.dtype})" if self.completion_tokens else "–",
            self.same_alone,
        ]


def linear_shapes(config: dict) -> list[tuple[int, int]]:
    """(in, out) of every linear layer in one decoder block of a Gemma-3-style model."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    return [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]


def _matmul_s(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 5) -> float:
    a, w = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ w  # warm-up (kernel selection, page faults)
    started = time.perf_counter()
    for _ in range(reps):
        a @ w
    return (time.perf_counter() - started) / reps


def bounds(
    config: dict, dtype: torch.dtype, prefill_tokens: int, prompts: int, decode_rows: int
) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) if only the linear layers and the vocabulary head ran."""
    layers, h, vocab = config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]
    shapes = linear_shapes(config)
    prefill = layers * sum(_matmul_s(prefill_tokens, k, n, dtype) for k, n in shapes)
    prefill += _matmul_s(prompts, h, vocab, dtype)  # the head: the last position of each prompt
    decode = layers * sum(_matmul_s(decode_rows, k, n, dtype) for k, n in shapes)
    decode += _matmul_s(decode_rows, h, vocab, dtype)  # the head: every row, every step
    return prefill_tokens / prefill, decode_rows / decode


def _timed(engine: str, workload: str, backend, requests: list[Request], dtype: str = "fp32") -> Row:
    computed = getattr(backend, "computed_tokens", None)
    started = time.perf_counter()
    answers, stats = run_requests(backend, requests, None, progress=False)
    wall = time.perf_counter() - started
    if stats.unanswered:
        raise SystemExit(f"{engine}/{workload}: {stats.unanswered} unanswered requests: {stats.failure_reasons}")
    # answered but not kept by the generate filters (e.g. finish_reason=length) still cost their tokens
    row = Row(
        engine, workload, len(requests), stats.prompt_tokens, stats.completion_tokens, wall, stats.failures, dtype
    )
    if computed is not None and workload.startswith("score"):
        row.computed_tokens = backend.computed_tokens - computed
    if workload == "generate" and hasattr(backend, "batch_size") and hasattr(backend, "tokenizer"):  # local engines
        # a row's text should depend on its own seed only: re-run the first 12 in batches of 3
        size, backend.batch_size = backend.batch_size, 3
        again = dict(backend.run(requests[:12]))
        backend.batch_size = size
        row.same_alone = f"{sum(again[i].text == answers[i].text for i in again)}/{len(again)}"
    return row


def workloads(
    params, gold: Path, pool: Path, n_generate: int, n_score: int
) -> tuple[list[Request], dict[str, list[Request]]]:
    """The generate stage's requests (its premises, shot pool and sampling, built by the stage's own
    functions) and annotate@gemma's scoring requests over the generated pool (its prompt and label
    words), with each row's own shots (``per_row``, the default before issue 19) and with one draw
    shared by every row (``shared``, the default since)."""
    task, cfg, labels = params.task, params.generate, params.generate_labels
    tp = TextProcessor.for_task(task)
    prompt = load_generate_prompt(ROOT / "prompts", cfg.prompt, labels, task)
    train = load_gold(gold, "train").to_dict("records")
    shots = shot_pool(gold, params)
    blocked = generation.blocked_texts((load_gold(gold, s).to_dict("records") for s in ("val", "test")), tp)
    premises, _ = generation.select_premises(train, cfg.num_premises, cfg.seed, blocked, tp)
    generate, _ = generation.plan_requests(premises, shots, prompt, cfg, labels)
    ann = params.annotator("gemma")
    ann_prompt = load_annotate_prompt(ROOT / "prompts", ann.prompt, task)
    rows = read_jsonl(pool)[:n_score]
    score = {
        selection: build_requests(
            rows,
            ann.model_copy(update={"shot_selection": selection}),
            ann_prompt,
            shots,
            params.annotate.seed,
            labels=task.labels,
            task=task.name,
        )  # fmt: skip
        for selection in ("per_row", "shared")
    }
    return generate[:n_generate], score


def engine_at(rev: str) -> type:
    """``TransformersBackend`` as the module was at git revision ``rev`` (imported from ``git show``,
    beside today's ``synthllm``: the module's own imports are the backend base and errors)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{ENGINE}"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"transformers_local_at_{rev}")
    module.__file__ = f"{rev}:{ENGINE}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module.TransformersBackend


def before_rows(rev: str, model: Path, generate: list[Request], score: list[Request]) -> list[Row]:
    """The engine at ``rev`` with that revision's defaults: float32, generate batch 30, scoring 16
    (each row its own shots, as that revision's default asked)."""
    old = engine_at(rev)(model, dtype="float32")
    old.batch_size = 30
    rows = [_timed(f"transformers @{rev} (float32, batch 30)", "generate", old, generate)]
    old.batch_size = 16
    rows.append(_timed(f"transformers @{rev} (float32, batch 16)", "score, per-row shots", old, score))
    old.close()
    return rows


def llama_cpp_rows(generate: list[Request], slots: list[int], threads: int) -> list[Row]:
    sys.path.insert(0, str(ROOT / "tests"))
    from llama_server import gemma_gguf, llama_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gguf = gemma_gguf(Path(tmp))
        for n in slots:
            with llama_server(gguf, slots=n, threads=threads) as url:
                backend = make_backend(
                    OpenAIBackendParams(
                        model="gemma-3-270m", base_urls=[url], endpoint="completions", concurrency=n,
                        timeout_s=600, max_retries=0, logprobs=False, api_key_env="NO_KEY_NEEDED",
                    )
                )  # fmt: skip
                rows.append(_timed(f"llama.cpp ({n} slot{'s' * (n > 1)})", "generate", backend, generate))
    return rows


def kernels() -> str:
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, oneDNN {torch.backends.mkldnn.is_available()}, "
        f"MKL {torch.backends.mkl.is_available()}; {platform.processor() or platform.machine()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--model", type=Path, default=ROOT / "models/generator")
    ap.add_argument("--gold", type=Path, default=ROOT / "data/gold")
    ap.add_argument("--pool", type=Path, default=ROOT / "data/synthetic/generated.jsonl", help="the pool to score")
    ap.add_argument("--generate", type=int, default=60, help="generate requests (of the default's 180)")
    ap.add_argument("--score", type=int, default=96, help="annotate@gemma scoring requests (pool rows)")
    ap.add_argument("--slots", default="1,2", help="llama.cpp slot counts to try ('' to skip llama.cpp)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="dtypes of this project's engine to run")
    ap.add_argument("--before", default=BEFORE, help="git revision of the engine to compare with ('' to skip)")
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    args = ap.parse_args()
    params = load_params(args.params)
    generate, score = workloads(params, args.gold, args.pool, args.generate, args.score)
    config = json.loads((args.model / "config.json").read_text())
    config = config.get("text_config", config)
    gen_cfg = params.generate.backend
    rows = before_rows(args.before, args.model, generate, score["per_row"]) if args.before else []
    for dtype in args.dtypes.split(","):
        short = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
        local = TransformersBackend(args.model, dtype=dtype, batch_size=gen_cfg.batch_size)
        rows.append(_timed(f"this engine ({dtype}, {gen_cfg.batch_size} slots)", "generate", local, generate, short))
        for selection, label in (("per_row", "per-row shots"), ("shared", "shared shots")):
            rows.append(_timed(f"this engine ({dtype}, packed)", f"score, {label}", local, score[selection], short))
        local.close()
    if args.slots:
        rows += llama_cpp_rows(generate, [int(s) for s in args.slots.split(",")], torch.get_num_threads())
    bound = {
        name: bounds(config, dtype, 2048, 2048 // 300, gen_cfg.batch_size)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    before = {r.workload.split(" ")[0]: r.requests / r.wall_s for r in rows if r.engine.startswith("transformers @")}
    text = _markdown(rows, bound, before, kernels(), gen_cfg.batch_size)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


def _markdown(
    rows: list[Row], bound: dict[str, tuple[float, float]], before: dict[str, float], kern: str, decode_rows: int
) -> str:
    head = (
        "| engine | workload | requests | wall s | req/s | vs before | prompt tok/s | computed prompt tok/s "
        "| completion tok/s | cut/failed | % prefill bound | % decode bound | same text in batches of 3 |"
    )
    lines = [
        "# Local inference vs the measured bound",
        "",
        f"Kernels: {kern}.",
        "",
        head,
        "|" + " --- |" * 13,
        *("| " + " | ".join(r.cells(bound, before)) + " |" for r in rows),
        "",
        "Prompt tok/s counts every request's whole prompt; computed prompt tok/s the tokens the model ran "
        "(a shared few-shot prefix once), which is what % prefill bound is of. vs before: req/s over the "
        "engine before issue 19 on the same workload (scoring: its per-row-shot requests).",
        "",
        "Bound (linear layers + vocabulary head only, measured matmuls in this run):",
        "",
        "| dtype | prefill tok/s (2048-token chunks) | decode tok/s (" + str(decode_rows) + " rows/step) |",
        "| --- | --- | --- |",
        *(f"| {name} | {p:.0f} | {d:.1f} |" for name, (p, d) in bound.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
