"""Gold budgets: nested stratified subsets, and no gold label outside the budget reaching the
classifier annotator, the few-shot prompts (generation and annotation) or downstream training."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from edit_params import fake_backend, load_params, write_params

from synthllm.budget import nested_order, subset
from synthllm.io import read_frame, read_jsonl, write_jsonl
from synthllm.stages import annotate, generate
from synthllm.stages import train as train_stage

BUDGET, SHOTS = 60, 30


def test_subsets_are_nested_and_stratified(gold_dir):
    train = read_frame(gold_dir / "train.jsonl")
    sizes = [100, 250, 500, 1000]
    ids = [set(subset(train, b, seed=5)["id"]) for b in sizes]
    assert all(a < b for a, b in zip(ids, ids[1:]))  # 100 ⊂ 250 ⊂ 500 ⊂ 1000
    shares = train["label"].value_counts(normalize=True)
    for b in sizes:
        counts = subset(train, b, seed=5)["label"].value_counts()
        assert all(abs(counts[lab] - b * shares[lab]) <= 1 for lab in shares.index), (b, counts.to_dict())
    assert list(nested_order(train["label"].tolist(), 5)) == list(nested_order(train["label"].tolist(), 5))
    assert set(subset(train, 100, seed=6)["id"]) != ids[0]  # another seed, another order
    assert len(subset(train, None, 5)) == len(train) == len(subset(train, 10**6, 5))


@pytest.fixture
def budget_work(tmp_path, repo_root, gold_dir, fake_openai):
    params = load_params(repo_root / "params.yaml")
    params["gold"].update(budget=BUDGET, shot_pool=SHOTS)
    remote = fake_backend(
        fake_openai.url,
        "m",
        endpoint="completions",
        api_key_env="NO_KEY_NEEDED",
        concurrency=4,
        timeout_s=5,
        max_retries=1,
    )
    params["generate"].update(num_premises=20, shots=3, backend=remote)
    params["annotators"] = {"writer": "prompts/fa/nli/annotate.yaml"}
    params["annotator_configs"] = {"writer": {"kind": "llm", "method": "instruct", "shots": 3, "backend": remote}}
    params["aggregates"], params["cascades"] = {}, {}
    params["branches"] = {"writer": "data/annotated/writer.jsonl"}
    params["annotate"]["audit_size"] = 10
    params["annotator_training"].update(gold_epochs=1, classifier={"kind": "sklearn_sgd"})
    params["train"].update(gold_epochs=1, synthetic_epochs=1, seeds=[1], classifier={"kind": "sklearn_sgd"})
    write_params(tmp_path / "params.yaml", params)
    return tmp_path


def test_no_gold_label_outside_the_budget_is_used(budget_work, gold_dir, repo_root, fake_openai, monkeypatch):
    work = budget_work
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(work / "cache"))
    train = read_frame(gold_dir / "train.jsonl")
    inside = subset(train, BUDGET, 5)
    outside = train[~train["id"].isin(inside["id"])]
    shot_texts = set(subset(train, SHOTS, 5)["hypothesis"])
    common = ["--params", str(work / "params.yaml")]

    generate.main(
        [
            *common,
            "--gold",
            str(gold_dir),
            "--prompts",
            str(repo_root / "prompts"),
            "--out",
            str(work / "generated.jsonl"),
            "--stats",
            str(work / "g.json"),
            "--run-stats",
            str(work / "gr.json"),
        ]
    )
    pool = [{**r, "id": f"syn-{i}"} for i, r in enumerate(read_jsonl(gold_dir / "val.jsonl")[-12:])]
    write_jsonl(pool, work / "pool.jsonl")
    annotate.main(
        [
            *common,
            "--name",
            "writer",
            "--pool",
            str(work / "pool.jsonl"),
            "--gold",
            str(gold_dir),
            "--prompts",
            str(repo_root / "prompts"),
            "--out",
            str(work / "a.jsonl"),
            "--audit",
            str(work / "au.jsonl"),
            "--metrics",
            str(work / "am.json"),
        ]
    )
    prompts = [b["prompt"] for b in fake_openai.bodies]
    assert len(prompts) == 60 + 12 + 10  # generation, pool, audit
    used = Counter(h for h in train["hypothesis"] for p in prompts if f": {h}\n" in p)
    assert used and set(used) <= shot_texts  # every labelled example shown comes from the shot pool
    assert not any(f": {h}\n" in p for h in outside["hypothesis"] for p in prompts)

    train_stage.main(
        [
            *common,
            "--annotator-classifier",
            "--regime",
            "gold_only",
            "--gold",
            str(gold_dir),
            "--out",
            str(work / "clf"),
            "--metrics",
            str(work / "ta.json"),
        ]
    )
    write_jsonl(pool[:8], work / "split" / "train.jsonl")
    write_jsonl(pool[8:], work / "split" / "dev.jsonl")
    train_stage.main(
        [
            *common,
            "--regime",
            "warmup",
            "--gold",
            str(gold_dir),
            "--synthetic",
            str(work / "split"),
            "--out",
            str(work / "down"),
            "--metrics",
            str(work / "td.json"),
        ]
    )
    expected = hashlib.sha256("\n".join(sorted(inside["id"])).encode()).hexdigest()
    for metrics in ("ta.json", "td.json"):
        report = json.loads((work / metrics).read_text())
        assert report["gold_rows"] == BUDGET and report["gold_ids_sha256"] == expected
    phases = json.loads((work / "td.json").read_text())["seeds"]["1"]["phases"]
    assert [p["rows"] for p in phases] == [8, BUDGET]
