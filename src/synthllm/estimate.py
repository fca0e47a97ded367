"""Tokens and dollars of the configured generate and annotate runs, before any call is made.

``python -m synthllm.estimate --params params.yaml [--rows N]`` prints one line per model run.
Prompts are rendered from the real prompt files with stand-in texts of typical FarsTail length
(``PREMISE_CHARS``, ``HYPOTHESIS_CHARS``). Tokens are counted with tiktoken's ``o200k_base`` when it
is installed (it is not a dependency), otherwise by a heuristic: one token per 4 ASCII characters
and one per 2 other characters, rounded up. Byte-level BPE vocabularies spend about 2-3 Persian
characters per token, so the heuristic errs on the expensive side, which is the safe side for a
budget. Output tokens are counted at their cap (``max_new_tokens``): an upper bound, not a forecast.
Local (transformers) runs cost $0. This module does not read generated data or call any model.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from synthllm.params import OpenAIBackendParams, Params, load_params
from synthllm.prompts import load_annotate_prompt, load_generate_prompt

PREMISE_CHARS, HYPOTHESIS_CHARS = 150, 60
ANSWER_TOKENS = 16  # an instruct annotator's answer: a label word or {"label": "..."}

try:  # optional: exact counts for OpenAI's current vocabularies
    import tiktoken

    _ENCODING = tiktoken.get_encoding("o200k_base")
except Exception:  # not installed, or its vocabulary file cannot be fetched offline
    _ENCODING = None


def approx_tokens(text: str) -> int:
    if _ENCODING is not None:
        return len(_ENCODING.encode(text))
    ascii_chars = sum(c.isascii() for c in text)
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars) / 2)


@dataclass
class Line:
    run: str
    backend: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    usd: float


def _usd(backend: object, prompt_tokens: int, output_tokens: int) -> float:
    if not isinstance(backend, OpenAIBackendParams):
        return 0.0
    p = backend.price
    usd = (prompt_tokens * p.input_per_mtok + output_tokens * p.output_per_mtok) / 1e6
    return usd * (1 - p.batch_discount) if backend.use_batch_api else usd


def _backend_name(backend: object) -> str:
    return f"openai:{backend.model}" if isinstance(backend, OpenAIBackendParams) else "local"


def estimate(params: Params, prompts_root: Path, rows: int | None = None) -> list[Line]:
    g = params.generate
    rows = rows if rows is not None else g.num_premises * len(g.labels) * g.samples_per_label
    premise, hypothesis = "ا" * PREMISE_CHARS, "ب" * HYPOTHESIS_CHARS
    shots = [{"premise": premise, "hypothesis": hypothesis, "label": g.labels[0]}] * g.shots
    gen_prompt = load_generate_prompt(prompts_root, g.prompt, g.labels).render(premise, g.labels[0], shots)
    tokens_in, tokens_out = rows * approx_tokens(gen_prompt), rows * g.max_new_tokens
    lines = [Line("generate", _backend_name(g.backend), rows, tokens_in, tokens_out,
                  _usd(g.backend, tokens_in, tokens_out))]
    for name in params.annotators:
        a = params.annotator_configs[name]
        if a.kind == "classifier" or a.backend is None:
            lines.append(Line(f"annotate:{name}", "classifier", rows + params.annotate.audit_size, 0, 0, 0.0))
            continue
        prompt = load_annotate_prompt(prompts_root, a.prompt)
        # the stability variant labels the pool a second time, with the hypothesis first
        labelled = rows * (2 if a.stability_variant else 1) + params.annotate.audit_size
        if a.method == "instruct":
            text = "".join(m["content"] for m in prompt.render_chat(premise, hypothesis))
            per_in, per_out = approx_tokens(text), ANSWER_TOKENS
        else:  # one scoring pass per row; each label word is scored as a continuation, not generated
            per_in, per_out = approx_tokens(prompt.render_scoring(premise, hypothesis, shots[:a.shots])), 0
        tokens_in, tokens_out = labelled * per_in, labelled * per_out
        lines.append(Line(f"annotate:{name}", _backend_name(a.backend), labelled, tokens_in, tokens_out,
                          _usd(a.backend, tokens_in, tokens_out)))
    return lines


def format_table(lines: list[Line]) -> str:
    head = f"{'run':<24} {'backend':<28} {'requests':>9} {'prompt tok':>12} {'output tok':>11} {'usd':>10}"
    body = [f"{x.run:<24} {x.backend:<28} {x.requests:>9} {x.prompt_tokens:>12} {x.output_tokens:>11} "
            f"{x.usd:>10.4f}" for x in lines]
    total = sum(x.usd for x in lines)
    return "\n".join([head, *body, f"{'total':<24} {'':<28} {'':>9} {'':>12} {'':>11} {total:>10.4f}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prompts", default="prompts", help="Folder holding the prompt files.")
    parser.add_argument("--rows", type=int, default=None,
                        help="Synthetic rows to generate and annotate (default: from params).")
    args = parser.parse_args(argv)
    counter = "tiktoken o200k_base" if _ENCODING is not None else "chars heuristic (see module doc)"
    print(format_table(estimate(load_params(args.params), Path(args.prompts), args.rows)))
    print(f"tokens counted with: {counter}; output tokens at their cap")


if __name__ == "__main__":
    main()
