"""Figures in the README that a program computes are included generated, never retyped: each block
between ``<!-- estimate: ARGS ... -->`` and ``<!-- /estimate -->`` must equal the estimator's
markdown for those arguments (the paper-scale table once disagreed with the estimator: GPT-4o-mini
output 3.2M vs 6.4M tokens, Aya 0.78 h vs 1.13 h)."""

from __future__ import annotations

import re
import shlex

from synthllm.estimate import Speed, estimate, format_markdown
from synthllm.params import load_params

BLOCK = re.compile(r"<!-- estimate: (?P<args>[^(]+?) \(generated[^>]*-->\n(?P<table>.*?)<!-- /estimate -->", re.S)


def test_estimate_tables_in_the_readme_are_the_estimators_output(repo_root):
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    assert blocks, "the README has no generated estimate table"
    for block in blocks:
        params, flag, rows = shlex.split(block["args"])
        assert flag == "--rows"
        expected = format_markdown(estimate(load_params(repo_root / params), repo_root / "prompts", int(rows), Speed()))
        assert block["table"].strip() == expected.strip(), (
            f"README table for {block['args']} is stale: paste `python -m synthllm.estimate --params {params} "
            f"--rows {rows} --markdown`"
        )


def test_the_estimator_prices_a_cascade_whose_expensive_annotator_is_not_active(repo_root):
    params = load_params(repo_root / "presets" / "paper.yaml")
    lines = {x.run: x for x in estimate(params, repo_root / "prompts", 1000, Speed())}
    assert lines["cascade:cascade"].requests == 0  # gpt4o_mini is active: its answers are cached
    data = params.model_dump()
    data["annotators"].pop("gpt4o_mini")
    data["aggregates"]["vote"]["members"].remove("gpt4o_mini")
    data["branches"].pop("gpt4o_mini", None)
    from synthllm.params import parse_params

    lines = {x.run: x for x in estimate(parse_params(data), repo_root / "prompts", 1000, Speed())}
    cascade = lines["cascade:cascade"]
    assert cascade.requests == 1000 + params.annotate.audit_size and cascade.usd > 0
    assert "upper bound" in cascade.basis
