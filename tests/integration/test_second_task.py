"""A second task by configuration only: Persian single-text review sentiment, whole DAG, real dvc.

The temporary repository is this repository's code, dvc.yaml and prompt files unchanged; only
params.yaml differs (``task``, ``gold.source: local`` pointing at the fixture in
tests/fixtures/sentiment_fa, the sentiment prompt files, a tiny generator). FarsTail is not
reachable from this run: the mirror variable is unset and there is no internet, so a stage that
still reached for it would fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_dvc_pipeline import dvc, make_repo, tiny_params

pytestmark = pytest.mark.slow

LABELS = ["positive", "negative", "neutral"]


def sentiment_params(repo_root: Path, tiny_lm: Path) -> dict:
    """The NLI test's tiny configuration, switched to the sentiment task by params alone."""
    params = tiny_params(repo_root, tiny_lm)
    params["task"] = {
        "name": "sentiment",
        "language": "fa",
        "input": "single",
        "labels": LABELS,
        "text_column": "text",
        "script": "arabic",
        "normalizer": "hazm",
    }
    params["gold"] = {
        "source": "local",
        "path": str(repo_root / "tests/fixtures/sentiment_fa"),
        "budget": None,
        "budget_seed": 5,
        "shot_pool": 100,
    }  # dvc.yaml reads these keys
    params["generate"].update(prompt="fa/sentiment/generate", num_premises=10, shots=2, max_new_tokens=24)
    tinylm = {k: v for k, v in params["annotator_configs"]["tinylm"].items() if k != "stability_variant"}
    params["cascades"] = {}  # the NLI cascade's expensive annotator is not configured here
    params["annotator_configs"] = {
        "classifier": params["annotator_configs"]["classifier"],
        "tinylm": {**tinylm, "prompt": "fa/sentiment/annotate"},
    }
    params["annotator_training"]["gold_epochs"] = 4
    params["regimes"] = ["synthetic_only", "warmup"]
    params["curves"] = {"budgets": [100], "pool_budget": 100, "pool_fractions": [1.0]}
    params["train"].update(gold_epochs=4, seeds=[1])
    return params


@pytest.fixture(scope="module")
def sentiment_repo(tmp_path_factory, repo_root, tiny_lm):
    env = {k: v for k, v in os.environ.items() if k != "SYNTHLLM_FARSTAIL_MIRROR"}
    env.update(SYNTHLLM_CACHE_DIR=str(tmp_path_factory.mktemp("llm-cache")), TQDM_DISABLE="1")
    repo = make_repo(repo_root, tmp_path_factory.mktemp("s") / "repo", sentiment_params(repo_root, tiny_lm))
    for shared in ("src", "dvc.yaml", "prompts"):  # the code and DAG are this repository's, unchanged
        assert (repo / shared).exists()
    dvc("repro", cwd=repo, env=env)
    return repo, env


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_sentiment_dag_runs_end_to_end_with_its_own_labels(sentiment_repo):
    repo, env = sentiment_repo
    counts = json.loads((repo / "data/gold/counts.json").read_text())
    assert [counts[s]["rows"] for s in ("train", "val", "test")] == [120, 45, 45]
    assert set(counts["sha256"]) == {"train", "val", "test"}  # local gold files are fingerprinted
    gold = _jsonl(repo / "data/gold/train.jsonl")
    assert all(r["premise"] == "" and r["hypothesis"] and r["label"] in LABELS for r in gold)

    generated = _jsonl(repo / "data/synthetic/generated.jsonl")
    stats = json.loads((repo / "metrics/generate.json").read_text())
    assert stats["generated"] == 10 * 3 and stats["kept"] == len(generated) > 0
    assert all(r["premise"] == "" and r["hypothesis"] and r["intended_label"] in LABELS for r in generated)
    # ids use the shortest distinct label prefixes (pos/neg/neu), so they stay unique
    assert len({r["id"] for r in generated}) == len(generated)
    assert {r["id"].rsplit("-", 1)[1][:3] for r in generated} <= {"pos", "neg", "neu"}
    assert stats.get("dropped_copy_of_premise", 0) == 0

    for name in ("classifier", "tinylm"):
        rows = _jsonl(repo / f"data/annotated/{name}.jsonl")
        assert len(rows) == len(generated)
        assert {r["label"] for r in rows} - {None} <= set(LABELS)
        m = json.loads((repo / f"metrics/annotators/{name}.json").read_text())
        assert m["audit"]["n"] == 20 and set(m["pool"]["label_distribution"]) == set(LABELS)
        assert len(m["audit"]["confusion"]) == 3
    # the gold-trained single-text classifier really reads the text: far above chance (1/3)
    ev = json.loads((repo / "metrics/eval/gold__gold_only.json").read_text())
    assert ev["summary"]["all_accuracy_mean"] > 0.6
    assert "hard_hypothesis_accuracy_mean" not in ev["summary"]  # the fixture has no hard subsets
    runs = sorted(p.stem for p in (repo / "metrics/eval").glob("*.json"))
    assert runs == [
        "classifier__synthetic_only",
        "classifier__warmup",
        "gold__gold_only",
        "tinylm__synthetic_only",
        "tinylm__warmup",
        "vote__synthetic_only",
        "vote__warmup",
    ]

    report = (repo / "reports/results.md").read_text()
    assert "pool labels pos/neg/neu" in report and "(gold test, %)" in report
    assert "hard-hyp" not in report and "FarsTail" not in report


def test_sentiment_export_uses_the_task_columns_and_labels(sentiment_repo):
    from datasets import load_from_disk

    repo, _ = sentiment_repo
    dd = load_from_disk(str(repo / "data/export/classifier/hf"))
    assert list(dd["train"].features) == ["id", "text", "label", "intended_label", "confidence"]
    assert dd["train"].features["label"].names == LABELS
    card = (repo / "data/export/classifier/README.md").read_text()
    assert "- fa" in card and "sentiment" in card and "natural-language-inference" not in card
    assert "FarsTail" not in card


def test_sentiment_repo_is_up_to_date_after_repro(sentiment_repo):
    repo, env = sentiment_repo
    assert "up to date" in dvc("status", cwd=repo, env=env).stdout
