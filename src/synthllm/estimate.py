"""Tokens, dollars and hours of the configured generate and annotate runs, before any call is made.

``python -m synthllm.estimate --params params.yaml [--rows N] [--measured metrics]`` prints one line
per model run.
Prompts are rendered from the real prompt files with stand-in texts of typical FarsTail length
(``PREMISE_CHARS``, ``HYPOTHESIS_CHARS``). Tokens are counted by
:func:`synthllm.backends.openai_wire.approx_tokens`: with tiktoken's ``o200k_base`` when it
is installed (it is not a dependency), otherwise by a heuristic: one token per 4 ASCII characters
and one per 2 other characters, rounded up. Byte-level BPE vocabularies spend about 2-3 Persian
characters per token, so the heuristic errs on the expensive side, which is the safe side for a
budget. Output tokens are counted at their configured caps (``generate.max_new_tokens``, an
annotator's ``max_answer_tokens``; one token for label-word scoring): an upper bound, not a
forecast, and every call that is re-asked after an unreadable sampled answer (``parse_retries``) is
extra. Local (transformers) runs cost $0.

Hours: an HTTP run takes ``requests × latency / concurrency``, the latency of one request being
``ttft_s + output tokens / decode_tok_s`` (assumptions with flags: 0.5 s and 40 tokens/s per stream,
typical of a loaded vLLM server or the OpenAI API for short answers); a Batch API run is bounded by
its 24 h completion window. A local run's hours come from a measured rate — requests sent per second
of wall time in a previous run's metrics (``--measured``: ``generate_run.json`` and
``annotators/<name>.json``), or are left blank. This module does not read generated data or call any
model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from synthllm.backends.openai_wire import TOKEN_COUNTER, approx_tokens
from synthllm.params import AnnotatorParams, OpenAIBackendParams, Params, load_params
from synthllm.prompts import load_annotate_prompt, load_generate_prompt

PREMISE_CHARS, HYPOTHESIS_CHARS = 150, 60


@dataclass
class Line:
    run: str
    backend: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    usd: float
    hours: float | None = None
    basis: str = ""


@dataclass(frozen=True)
class Speed:
    """Assumptions behind the hours of HTTP runs, and measured rates of local runs (requests/s)."""

    ttft_s: float = 0.5
    decode_tok_s: float = 40.0
    measured: dict | None = None


def measured_rates(metrics_dir: Path) -> dict[str, float]:
    """Requests per second actually sent in an earlier run, keyed by run name (generate,
    annotate:<name>); runs served from the cache or with no timing are skipped."""
    found = {"generate": metrics_dir / "generate_run.json"}
    found.update({f"annotate:{f.stem}": f for f in sorted((metrics_dir / "annotators").glob("*.json"))})
    rates = {}
    for run, path in found.items():
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        stats = data.get("run", data)
        if stats.get("sent") and stats.get("wall_s"):
            rates[run] = stats["sent"] / stats["wall_s"]
    return rates


def _hours(run: str, backend: object, requests: int, out_tokens_each: float, speed: Speed) -> tuple[float | None, str]:
    if isinstance(backend, OpenAIBackendParams):
        if backend.use_batch_api:
            return None, "Batch API: within its 24 h window"
        latency = speed.ttft_s + out_tokens_each / speed.decode_tok_s
        replicas = max(1, len(backend.base_urls))
        return (
            requests * latency / backend.concurrency / 3600,
            f"{backend.concurrency} in flight × {latency:.2f} s/request"
            + (f" (over {replicas} replicas)" if replicas > 1 else ""),
        )
    rate = (speed.measured or {}).get(run)
    if rate:
        return requests / rate / 3600, f"measured {rate:.2f} requests/s"
    return None, "local: no measured rate (pass --measured metrics)"


def _usd(backend: object, prompt_tokens: int, output_tokens: int) -> float:
    if not isinstance(backend, OpenAIBackendParams):
        return 0.0
    return backend.price.usd(prompt_tokens, output_tokens, backend.use_batch_api)


def _backend_name(backend: object) -> str:
    return f"openai:{backend.model}" if isinstance(backend, OpenAIBackendParams) else "local"


def _per_request(a: AnnotatorParams, prompt, premise: str, hypothesis: str, shots: list[dict]) -> tuple[int, int]:
    """Prompt tokens and output-token cap of one request of annotator ``a``."""
    chat = isinstance(a.backend, OpenAIBackendParams) and a.backend.endpoint == "chat"
    if a.method == "instruct":
        text = (
            "".join(m["content"] for m in prompt.render_chat(premise, hypothesis, shots=shots[: a.shots]))
            if chat
            else prompt.render_scoring(premise, hypothesis, shots[: a.shots])
        )
        return approx_tokens(text), a.max_answer_tokens
    # one scoring pass per row: locally no token is generated, over HTTP one
    return (
        approx_tokens(prompt.render_scoring(premise, hypothesis, shots[: a.shots])),
        1 if isinstance(a.backend, OpenAIBackendParams) else 0,
    )


def _llm_line(run: str, a: AnnotatorParams, requests: int, per: tuple[int, int], speed: Speed) -> Line:
    tokens_in, tokens_out = requests * per[0], requests * per[1]
    return Line(
        run,
        _backend_name(a.backend),
        requests,
        tokens_in,
        tokens_out,
        _usd(a.backend, tokens_in, tokens_out),
        *_hours(run, a.backend, requests, per[1], speed),
    )


def estimate(params: Params, prompts_root: Path, rows: int | None = None, speed: Speed = Speed()) -> list[Line]:
    """One line per model run: generate, every active annotator, and every cascade's escalations
    (an upper bound: at most ``max_escalated`` rows, else all of them; none when the expensive
    annotator is active, whose annotate stage already cached every answer the cascade asks)."""
    g, labels = params.generate, params.generate_labels
    rows = rows if rows is not None else g.num_premises * len(labels) * g.samples_per_label
    premise = "ا" * PREMISE_CHARS if params.task.input == "pair" else ""
    hypothesis = "ب" * HYPOTHESIS_CHARS
    most = max([g.shots] + [a.shots for a in params.annotator_configs.values()])
    shots = [{"premise": premise, "hypothesis": hypothesis, "label": labels[0]}] * most
    gen_prompt = load_generate_prompt(prompts_root, g.prompt, labels, params.task).render(
        premise, labels[0], shots[: g.shots]
    )
    tokens_in, tokens_out = rows * approx_tokens(gen_prompt), rows * g.max_new_tokens
    lines = [
        Line(
            "generate",
            _backend_name(g.backend),
            rows,
            tokens_in,
            tokens_out,
            _usd(g.backend, tokens_in, tokens_out),
            *_hours("generate", g.backend, rows, g.max_new_tokens, speed),
        )
    ]
    audit = params.annotate.audit_size
    for name in params.annotators:
        a = params.annotator_configs[name]
        run = f"annotate:{name}"
        if a.kind == "classifier" or a.backend is None:
            lines.append(Line(run, "classifier", rows + audit, 0, 0, 0.0, *_hours(run, None, rows + audit, 0, speed)))
            continue
        prompt = load_annotate_prompt(prompts_root, a.prompt, params.task)
        # the stability variant labels the pool a second time, with the hypothesis first
        labelled = rows * (2 if a.stability_variant else 1) + audit
        lines.append(_llm_line(run, a, labelled, _per_request(a, prompt, premise, hypothesis, shots), speed))
    for name, c in params.cascades.items():
        a, run = params.annotator_configs[c.expensive], f"cascade:{name}"
        if c.expensive in params.annotators or a.kind == "classifier" or a.backend is None:
            why = "its annotate stage's cache" if c.expensive in params.annotators else "a local classifier"
            lines.append(Line(run, _backend_name(a.backend), 0, 0, 0, 0.0, None, f"answered by {why}"))
            continue
        asked = (rows if c.max_escalated is None else min(rows, c.max_escalated)) + audit
        prompt = load_annotate_prompt(prompts_root, a.prompt, params.task)
        line = _llm_line(run, a, asked, _per_request(a, prompt, premise, hypothesis, shots), speed)
        line.basis += " (upper bound: every row escalated)" if c.max_escalated is None else ""
        lines.append(line)
    return lines


def format_markdown(lines: list[Line]) -> str:
    """The table as markdown (README and docs include it generated, never retyped)."""
    out = [
        "| run | backend | requests | input tokens | output tokens (cap) | $ | hours |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in lines:
        hours = "–" if x.hours is None else f"{x.hours:.2f}"
        out.append(
            f"| {x.run} | {x.backend} | {x.requests:,} | {x.prompt_tokens / 1e6:.1f}M | "
            f"{x.output_tokens / 1e6:.1f}M | {x.usd:.2f} | {hours} ({x.basis}) |"
        )
    return "\n".join(out + [f"| total | | | | | {sum(x.usd for x in lines):.2f} | |"])


def format_table(lines: list[Line]) -> str:
    head = (
        f"{'run':<24} {'backend':<28} {'requests':>9} {'prompt tok':>12} {'output tok':>11} "
        f"{'usd':>10} {'hours':>7}  basis of hours"
    )
    body = [
        f"{x.run:<24} {x.backend:<28} {x.requests:>9} {x.prompt_tokens:>12} {x.output_tokens:>11} "
        f"{x.usd:>10.4f} {'–' if x.hours is None else f'{x.hours:.2f}':>7}  {x.basis}"
        for x in lines
    ]
    total = sum(x.usd for x in lines)
    return "\n".join([head, *body, f"{'total':<24} {'':<28} {'':>9} {'':>12} {'':>11} {total:>10.4f}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prompts", default="prompts", help="Folder holding the prompt files.")
    parser.add_argument(
        "--rows", type=int, default=None, help="Synthetic rows to generate and annotate (default: from params)."
    )
    parser.add_argument(
        "--measured", type=Path, default=None, help="metrics folder of an earlier run: local runs' hours from its rates"
    )
    parser.add_argument(
        "--ttft-s", type=float, default=Speed.ttft_s, help="HTTP runs: seconds to the first token of one request"
    )
    parser.add_argument(
        "--decode-tok-s",
        type=float,
        default=Speed.decode_tok_s,
        help="HTTP runs: output tokens per second of one request stream",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    counter = TOKEN_COUNTER or "chars heuristic (see module doc)"
    speed = Speed(args.ttft_s, args.decode_tok_s, measured_rates(args.measured) if args.measured else None)
    lines = estimate(load_params(args.params), Path(args.prompts), args.rows, speed)
    print(format_markdown(lines) if args.markdown else format_table(lines))
    print(f"tokens counted with: {counter}; output tokens at their configured caps (an upper bound)")


if __name__ == "__main__":
    main()
