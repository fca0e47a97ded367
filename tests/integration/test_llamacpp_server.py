"""The paper's LLM path against a real OpenAI-compatible server: llama.cpp's own HTTP server
(``xllamacpp``) serving Gemma 3 270M, whose tokenizer splits label words into several tokens and
whose ``top_logprobs`` ignore the JSON-schema grammar.

The annotate stage runs through chat + JSON schema + logprobs and through completions + label-word
scoring; every confidence is checked against its definition computed here, by hand, from the raw
response the request cache holds. Generation runs through completions. ``presets/paper.yaml``'s
annotators, pointed at the server, run end to end at tiny scale.
"""

from __future__ import annotations

import json
import math
import sqlite3
import zlib
from contextlib import closing
from pathlib import Path

import pytest
from edit_params import annotate_argv, edited_params, fake_backend, load_params, write_params
from llama_server import gemma_gguf, llama_server

from synthllm.io import read_jsonl, write_jsonl
from synthllm.stages import aggregate, annotate, generate
from synthllm.stages import train as train_stage

pytest.importorskip("xllamacpp")
NLI = ("entailment", "contradiction", "neutral")
N_POOL, N_AUDIT = 8, 10


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory):
    with llama_server(gemma_gguf(tmp_path_factory.mktemp("gguf"))) as url:
        yield url


def raw_bodies(cache_file: Path) -> list[dict]:
    with closing(sqlite3.connect(cache_file)) as db:
        return [json.loads(zlib.decompress(raw))["body"] for (raw,) in db.execute("SELECT raw FROM responses")]


def _fits(written: str, word: str) -> bool:
    return word.startswith(written) or (written.startswith(word) and not written[len(word) :][:1].isalnum())


def chat_confidence_by_hand(body: dict) -> tuple[str, float]:
    """The definition, re-done on token strings: find the first token after '"label": "' at which
    only one label is still possible; there, sum the probabilities of the listed alternatives that
    continue into exactly one label (the lead ' "' must be kept); unlisted labels get the smallest
    listed probability; P(chosen) over the labels."""
    content = body["choices"][0]["logprobs"]["content"]
    text = "".join(t["token"] for t in content)
    label = json.loads(text)["label"]
    value = text.index('"', text.index(":", text.index('"label"'))) + 1
    pos = 0
    for t in content:
        start, pos = pos, pos + len(t["token"])
        if pos <= value or [w for w in NLI if _fits(text[value:pos], w)] != [label]:
            continue
        lead, prefix = text[start:value], text[value:start]
        alts = {a["token"]: a["logprob"] for a in t["top_logprobs"]}
        alts.setdefault(t["token"], t["logprob"])
        mass = dict.fromkeys(NLI, 0.0)
        for token, logprob in alts.items():
            if lead and not token.startswith(lead):
                continue
            written = prefix + token[len(lead) :]
            fits = [w for w in NLI if written.strip() and _fits(written, w)]
            if len(fits) == 1:
                mass[fits[0]] += math.exp(logprob)
        floor = math.exp(min(a["logprob"] for a in t["top_logprobs"]))
        filled = {w: m or floor for w, m in mass.items()}
        return label, filled[label] / sum(filled.values())
    raise AssertionError(f"no deciding token in {text!r}")


def workdir(tmp_path: Path, repo_root: Path, gold_dir: Path, annotators: dict) -> Path:
    params = edited_params(
        repo_root / "params.yaml",
        {"annotate.audit_size": N_AUDIT},
        annotators={name: "prompts/fa/nli/annotate.yaml" for name in annotators},
        annotator_configs=annotators,
        aggregates={},
        cascades={},
        branches={name: f"data/annotated/{name}.jsonl" for name in annotators},
    )
    write_params(tmp_path / "params.yaml", params)
    pool = [
        {"id": f"syn-{i}", "premise": r["premise"], "hypothesis": r["hypothesis"], "intended_label": r["label"]}
        for i, r in enumerate(read_jsonl(gold_dir / "train.jsonl")[:N_POOL])
    ]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    return tmp_path


def run_annotate(work: Path, gold_dir: Path, repo_root: Path, name: str) -> tuple[list[dict], list[dict], dict]:
    annotate.main(annotate_argv(work, gold_dir, repo_root, name, name=name))
    return (
        read_jsonl(work / name / "annotated.jsonl"),
        read_jsonl(work / name / "audit.jsonl"),
        json.loads((work / name / "metrics.json").read_text()),
    )


def test_annotate_stage_chat_json_schema_logprobs(llama_url, tmp_path, repo_root, gold_dir, monkeypatch):
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    chat = {
        "kind": "llm",
        "method": "instruct",
        "stability_variant": "hypothesis_first",
        "backend": fake_backend(
            llama_url, "gemma-3-270m", endpoint="chat", concurrency=1, timeout_s=120, max_retries=1
        ),
    }
    work = workdir(tmp_path, repo_root, gold_dir, {"chat": chat})
    pool, audit, metrics = run_annotate(work, gold_dir, repo_root, "chat")
    rows = pool + audit
    assert [r["status"] for r in rows] == ["ok"] * len(rows), [r["reason"] for r in rows if r["status"] != "ok"]
    assert all(0 < r["confidence"] <= 1 and r["confidence_source"] == "answer_token_logprobs" for r in rows)
    assert all(r["variant_status"] == "ok" and 0 < r["variant_confidence"] <= 1 for r in pool)
    assert metrics["audit"]["ece"] is not None and metrics["audit"]["confidence_coverage"] == 1.0
    assert metrics["variant"]["failed"] == 0 and metrics["run"]["sent"] == 2 * N_POOL + N_AUDIT

    by_hand = {}  # every cached raw response, with the confidence computed from its logprobs here
    for body in raw_bodies(tmp_path / "cache" / "requests.sqlite"):
        label, confidence = chat_confidence_by_hand(body)
        by_hand[round(confidence, 6)] = label
    for r in rows:
        assert by_hand.get(r["confidence"]) == r["label"], (r["confidence"], sorted(by_hand))


def test_annotate_stage_completions_label_word_scoring(llama_url, tmp_path, repo_root, gold_dir, monkeypatch):
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    scorer = {
        "kind": "llm",
        "method": "logprob",
        "shots": 1,
        "backend": fake_backend(
            llama_url, "gemma-3-270m", endpoint="completions", concurrency=1, timeout_s=120, max_retries=1
        ),
    }
    work = workdir(tmp_path, repo_root, gold_dir, {"scorer": scorer})
    pool, audit, metrics = run_annotate(work, gold_dir, repo_root, "scorer")
    rows = pool + audit
    assert all(r["status"] == "ok" and 0 < r["confidence"] <= 1 for r in rows), rows
    assert {r["confidence_source"] for r in rows} == {"first_token_logprobs"}
    assert metrics["audit"]["ece"] is not None

    words = {"درست": "entailment", "غلط": "contradiction", "شاید": "neutral"}  # the prompt's scoring words
    by_hand = {}
    for body in raw_bodies(tmp_path / "cache" / "requests.sqlite"):
        (first,) = body["choices"][0]["logprobs"]["content"]
        mass = dict.fromkeys(NLI, 0.0)
        for alt in first["top_logprobs"]:
            token = alt["token"].lstrip()
            fits = [lab for w, lab in words.items() if token and _fits(token, w)]
            if len(fits) == 1:
                mass[fits[0]] += math.exp(alt["logprob"])
        floor = math.exp(min(a["logprob"] for a in first["top_logprobs"]))
        filled = {lab: m or floor for lab, m in mass.items()}
        best = max(mass, key=mass.get)
        by_hand[round(filled[best] / sum(filled.values()), 6)] = best
    for r in rows:
        assert by_hand.get(r["confidence"]) == r["label"]


def test_generate_stage_through_completions(llama_url, tmp_path, repo_root, gold_dir, monkeypatch):
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    backend = fake_backend(
        llama_url, "gemma-3-270m", endpoint="completions", concurrency=1, timeout_s=120, max_retries=1, logprobs=False
    )
    params = load_params(repo_root / "params.yaml")
    params["generate"].update(num_premises=2, shots=1, max_new_tokens=40, backend=backend)
    write_params(tmp_path / "params.yaml", params)
    argv = [
        "--params",
        str(tmp_path / "params.yaml"),
        "--gold",
        str(gold_dir),
        "--prompts",
        str(repo_root / "prompts"),
        "--out",
        str(tmp_path / "generated.jsonl"),
        "--stats",
        str(tmp_path / "stats.json"),
        "--run-stats",
        str(tmp_path / "run.json"),
    ]
    generate.main(argv)
    stats, run = json.loads((tmp_path / "stats.json").read_text()), json.loads((tmp_path / "run.json").read_text())
    assert stats["generated"] == 6 and run["sent"] == 6 and run["completion_tokens"] > 6
    rows = read_jsonl(tmp_path / "generated.jsonl")
    assert stats["kept"] == len(rows) and all(r["hypothesis"] and "\n" not in r["hypothesis"] for r in rows)
    first = (tmp_path / "generated.jsonl").read_bytes()
    generate.main(argv)  # from the cache: nothing sent, same bytes
    assert json.loads((tmp_path / "run.json").read_text())["sent"] == 0
    assert (tmp_path / "generated.jsonl").read_bytes() == first


def test_paper_preset_annotators_on_the_llama_server(llama_url, tmp_path, repo_root, gold_dir, monkeypatch):
    """presets/paper.yaml with only the endpoints and model names overridden (and, since llama.cpp
    has no Batch API, GPT-4o-mini asked online): the classifier, 'GPT-4o-mini' and 'Aya-23' label a
    tiny pool; the preset's Dawid–Skene vote runs on those labels alone, and a confidence-weighted
    vote follows the LLMs where they agree."""
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    params = load_params(repo_root / "presets" / "paper.yaml")
    for name in ("gpt4o_mini", "aya23"):
        params["annotator_configs"][name]["backend"].update(
            base_urls=[llama_url], model="gemma-3-270m", use_batch_api=False, concurrency=1, timeout_s=120
        )
    params["annotator_training"] = {"classifier": {"kind": "sklearn_sgd"}, "gold_epochs": 2, "seed": 0}
    params["annotate"]["audit_size"] = N_AUDIT
    write_params(tmp_path / "params.yaml", params)
    pool = [
        {"id": f"syn-{i}", "premise": r["premise"], "hypothesis": r["hypothesis"], "intended_label": r["label"]}
        for i, r in enumerate(read_jsonl(gold_dir / "val.jsonl")[-N_POOL:])
    ]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    common = ["--params", str(tmp_path / "params.yaml")]
    train_stage.main(
        [
            *common,
            "--annotator-classifier",
            "--regime",
            "gold_only",
            "--gold",
            str(gold_dir),
            "--out",
            str(tmp_path / "models/annotators/classifier"),
            "--metrics",
            str(tmp_path / "t.json"),
        ]
    )
    monkeypatch.chdir(tmp_path)  # the classifier's model_dir is relative, as in the repository
    for name in params["annotators"]:
        annotate.main(
            [
                *common,
                "--name",
                name,
                "--pool",
                "generated.jsonl",
                "--gold",
                str(gold_dir),
                "--prompts",
                str(repo_root / "prompts"),
                "--out",
                f"annotated/{name}.jsonl",
                "--audit",
                f"audit/{name}.jsonl",
                "--metrics",
                f"metrics/{name}.json",
            ]
        )
    # the preset's own vote (dawid_skene) from the labels already paid for, then a confidence vote
    assert params["aggregates"]["vote"]["method"] == "dawid_skene"
    aggregate.main(
        [
            *common,
            "--name",
            "vote",
            "--annotated",
            "annotated",
            "--audit",
            "audit",
            "--out",
            "ds.jsonl",
            "--audit-out",
            "ds.audit.jsonl",
            "--metrics",
            "ds.json",
        ]
    )
    ds = json.loads((tmp_path / "ds.json").read_text())
    assert ds["aggregate"]["method"] == "dawid_skene" and ds["audit"]["n"] == N_AUDIT
    assert {r["fold"] for r in read_jsonl(tmp_path / "ds.audit.jsonl")} == set(range(5))  # out of fold
    params["aggregates"]["vote"] = {"members": params["aggregates"]["vote"]["members"], "method": "confidence"}
    write_params(tmp_path / "params.yaml", params)
    aggregate.main(
        [
            *common,
            "--name",
            "vote",
            "--annotated",
            "annotated",
            "--audit",
            "audit",
            "--out",
            "vote.jsonl",
            "--audit-out",
            "vote.audit.jsonl",
            "--metrics",
            "vote.json",
        ]
    )
    pools = {n: {r["id"]: r for r in read_jsonl(tmp_path / "annotated" / f"{n}.jsonl")} for n in params["annotators"]}
    for name in ("gpt4o_mini", "aya23"):
        metrics = json.loads((tmp_path / "metrics" / f"{name}.json").read_text())
        assert metrics["audit"]["confidence_coverage"] == 1.0 and metrics["audit"]["ece"] is not None
        assert all(r["confidence"] is not None and r["status"] == "ok" for r in pools[name].values())
    # both LLM annotators ask the same served model: the second is answered from the cache
    sent = {
        n: json.loads((tmp_path / "metrics" / f"{n}.json").read_text())["run"]["sent"] for n in ("gpt4o_mini", "aya23")
    }
    assert sent == {"gpt4o_mini": 2 * N_POOL + N_AUDIT, "aya23": 0}
    vote = {r["id"]: r for r in read_jsonl(tmp_path / "vote.jsonl")}
    against = [
        i
        for i in vote
        if pools["gpt4o_mini"][i]["label"] == pools["aya23"][i]["label"] != pools["classifier"][i]["label"]
    ]
    for i in against:  # weights are confidences: two agreeing LLMs outvote the classifier unless it is surer than both
        llm = pools["gpt4o_mini"][i]["confidence"] + pools["aya23"][i]["confidence"]
        expected = (
            pools["aya23"][i]["label"]
            if llm > pools["classifier"][i]["confidence"]
            else pools["classifier"][i]["label"]
        )
        assert vote[i]["label"] == expected
    assert against and sum(vote[i]["label"] == pools["aya23"][i]["label"] for i in against) >= 0.75 * len(against)
