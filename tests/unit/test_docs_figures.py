"""Figures in the README and in ``docs/`` are never retyped from a run by hand.

* A program's output is included generated: each block between ``<!-- estimate: ARGS ... -->`` and
  ``<!-- /estimate -->`` must equal the estimator's markdown for those arguments (the paper-scale table
  once disagreed with the estimator: GPT-4o-mini output 3.2M vs 6.4M tokens, Aya 0.78 h vs 1.13 h).
* A figure from a run is traced: the number written just before ``<!-- from: SOURCE -->`` must equal
  the value SOURCE names in a committed results file, at the number's own precision (a fraction in the
  file may be written as a percentage). SOURCE is ``path.json:dotted.key`` (list items by index) or
  ``path.csv[column=value,...]:column``, or a generated ``path.md`` results file in which the number
  appears as written.
* Every link from the README into ``docs/`` points at a file that exists.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

from synthllm.estimate import Speed, estimate, format_markdown
from synthllm.params import load_params

BLOCK = re.compile(r"<!-- estimate: (?P<args>[^(]+?) \(generated[^>]*-->\n(?P<table>.*?)<!-- /estimate -->", re.S)
FIGURE = re.compile(r"(?P<num>[−-]?\d[\d,]*(?:\.\d+)?)[\s%*]*<!-- from: (?P<src>\S+) -->")
MARK = re.compile(r"<!-- from: (?P<src>\S+) -->")
CSV_SOURCE = re.compile(r"(?P<path>[^\[]+\.csv)\[(?P<where>[^\]]*)\]:(?P<column>\S+)")
LINK = re.compile(r"\]\((?P<target>docs/[^)#\s]+)")


def _documents(repo_root: Path) -> list[Path]:
    return [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]


def _value(repo_root: Path, source: str) -> float | str:
    if source.endswith(".md"):
        return (repo_root / source).read_text(encoding="utf-8")
    if m := CSV_SOURCE.fullmatch(source):
        where = dict(kv.split("=", 1) for kv in m["where"].split(",") if kv)
        with (repo_root / m["path"]).open(encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(f) if all(r.get(k) == v for k, v in where.items())]
        assert len(rows) == 1, f"{source}: {len(rows)} rows match"
        return float(rows[0][m["column"]])
    path, _, key = source.partition(":")
    node = json.loads((repo_root / path).read_text(encoding="utf-8"))
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return float(node)


def _agrees(written: str, value: float | str) -> bool:
    if isinstance(value, str):  # a generated markdown results file: the figure appears in it as written
        return re.search(rf"(?<![\d.]){re.escape(written)}(?![\d]|\.\d)", value) is not None
    number = float(written.replace(",", "").replace("−", "-"))
    decimals = len(written.partition(".")[2])
    half = 0.5 * 10**-decimals + 1e-9
    return any(abs(candidate - number) <= half for candidate in (value, 100 * value))


def test_estimate_tables_in_the_docs_are_the_estimators_output(repo_root):
    blocks = [(doc, b) for doc in _documents(repo_root) for b in BLOCK.finditer(doc.read_text(encoding="utf-8"))]
    assert blocks, "no document has a generated estimate table"
    for doc, block in blocks:
        params, flag, rows = shlex.split(block["args"])
        assert flag == "--rows"
        expected = format_markdown(estimate(load_params(repo_root / params), repo_root / "prompts", int(rows), Speed()))
        assert block["table"].strip() == expected.strip(), (
            f"{doc.name} table for {block['args']} is stale: paste `python -m synthllm.estimate --params {params} "
            f"--rows {rows} --markdown`"
        )


def test_traced_figures_equal_their_results_files(repo_root):
    checked = 0
    for doc in _documents(repo_root):
        text = doc.read_text(encoding="utf-8")
        figures = list(FIGURE.finditer(text))
        assert len(figures) == len(MARK.findall(text)), f"{doc.name}: a `from:` mark follows no number"
        for figure in figures:
            value = _value(repo_root, figure["src"])
            assert _agrees(figure["num"], value), f"{doc.name}: {figure['num']} but {figure['src']} = {value}"
            checked += 1
    assert checked, "no traced figure in the docs"


def test_readme_links_into_docs_exist_and_every_doc_is_linked(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    targets = set(LINK.findall(readme))
    for target in targets:
        assert (repo_root / target).is_file(), f"README links to missing {target}"
    docs = {f"docs/{p.name}" for p in (repo_root / "docs").glob("*.md")}
    assert docs <= targets, f"docs not linked from the README: {sorted(docs - targets)}"
    for name in ("paper-scale", "new-task", "annotators", "offline-default", "measurements"):
        assert f"docs/{name}.md" in targets


def test_the_readme_is_a_map(repo_root):
    lines = (repo_root / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    assert not re.search(r"\d+ tests\b", "\n".join(lines)), "the README states the test suite's size"


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
