"""The cascade stage with the fault-injecting OpenAI-protocol server as the expensive annotator:
only escalated pool rows (and the audit sample) reach it, the threshold moves that count as it
should, and the frontier computed from the audit equals a cascade actually run at that threshold."""

from __future__ import annotations

import json

import pytest
from edit_params import fake_backend, load_params, rewrite_params, write_params
from fake_openai import label_for

from synthllm.io import read_jsonl, write_jsonl
from synthllm.stages import cascade as cascade_stage

N_POOL, N_AUDIT = 20, 12
CONFIDENCES = [round(0.3 + 0.6 * i / (N_POOL - 1), 4) for i in range(N_POOL)]  # 0.30 … 0.90


@pytest.fixture
def work(tmp_path, repo_root, gold_dir, fake_openai):
    backend = fake_backend(fake_openai.url, "m", api_key_env="NO_KEY", concurrency=4, timeout_s=5, max_retries=1)
    params = load_params(repo_root / "params.yaml")
    params["annotators"] = {"classifier": "models/annotators/classifier"}
    params["annotator_configs"] = {
        "classifier": {"kind": "classifier", "model_dir": "models/annotators/classifier"},
        "remote": {"kind": "llm", "method": "instruct", "backend": backend},
    }
    params["aggregates"] = {}
    params["cascades"] = {
        "casc": {
            "cheap": ["classifier"],
            "expensive": "remote",
            "expensive_reads": "prompts/fa/nli/annotate.yaml",
            "threshold": 0.5,
            "on_flip": False,
            "frontier_thresholds": [0.0, 0.5, 0.7, 1.01],
        }
    }
    params["branches"] = {"classifier": "data/annotated/classifier.jsonl"}
    write_params(tmp_path / "params.yaml", params)
    train, val = read_jsonl(gold_dir / "train.jsonl"), read_jsonl(gold_dir / "val.jsonl")
    pool = [
        {
            "id": f"syn-{i}",
            "premise": r["premise"],
            "hypothesis": r["hypothesis"],
            "label": "neutral",
            "confidence": c,
            "confidence_source": "classifier",
            "status": "ok",
            "reason": None,
        }
        for i, (r, c) in enumerate(zip(train, CONFIDENCES))
    ]
    audit = [
        {
            "id": r["id"],
            "premise": r["premise"],
            "hypothesis": r["hypothesis"],
            "gold_label": r["label"],
            "label": "neutral",
            "confidence": CONFIDENCES[i],
            "confidence_source": "classifier",
            "status": "ok",
            "reason": None,
        }
        for i, r in enumerate(val[:N_AUDIT])
    ]
    write_jsonl(pool, tmp_path / "annotated" / "classifier.jsonl")
    write_jsonl(audit, tmp_path / "audit" / "classifier.jsonl")
    return tmp_path


def run(work, repo_root, gold_dir, threshold: float, tag: str) -> dict:
    rewrite_params(work / "params.yaml", {"cascades.casc.threshold": threshold})
    cascade_stage.main(
        [
            "--params",
            str(work / "params.yaml"),
            "--name",
            "casc",
            "--annotated",
            str(work / "annotated"),
            "--audit",
            str(work / "audit"),
            "--gold",
            str(gold_dir),
            "--prompts",
            str(repo_root / "prompts"),
            "--out",
            str(work / tag / "pool.jsonl"),
            "--audit-out",
            str(work / tag / "audit.jsonl"),
            "--metrics",
            str(work / tag / "metrics.json"),
        ]
    )
    return json.loads((work / tag / "metrics.json").read_text())


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_only_escalated_rows_reach_the_expensive_annotator(
    work, repo_root, gold_dir, fake_openai, monkeypatch, threshold
):
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(work / f"cache-{threshold}"))
    metrics = run(work, repo_root, gold_dir, threshold, f"t{threshold}")
    escalated = sum(c < threshold for c in CONFIDENCES)
    assert metrics["escalation"]["escalated"] == escalated
    pool_asked = {b["messages"][-1]["content"] for b in fake_openai.bodies}
    assert sum(fake_openai.received.values()) == escalated + N_AUDIT == metrics["escalation"]["expensive_requests_sent"]
    rows = read_jsonl(work / f"t{threshold}" / "pool.jsonl")
    for row, conf in zip(rows, CONFIDENCES):
        asked = any(row["hypothesis"] in q for q in pool_asked)
        assert row["escalated"] == (conf < threshold) == asked
        assert row["label_from"] == ("remote" if conf < threshold else "classifier")
        if row["escalated"]:
            assert row["label"] == label_for(
                f"متن: {row['premise']}\nجمله: {row['hypothesis']}\n\nLabel (entailment, contradiction or neutral):"
            )


def test_frontier_from_the_audit_equals_a_cascade_run_at_that_threshold(work, repo_root, gold_dir, monkeypatch):
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(work / "cache"))
    frontier = {p["threshold"]: p for p in run(work, repo_root, gold_dir, 0.5, "a")["frontier"]}
    for threshold in (0.0, 0.5, 0.7, 1.01):
        metrics = run(work, repo_root, gold_dir, threshold, f"r{threshold}")
        audit = read_jsonl(work / f"r{threshold}" / "audit.jsonl")
        accuracy = sum(r["label"] == r["gold_label"] for r in audit) / len(audit)
        assert frontier[threshold]["audit_accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert frontier[threshold]["escalated_share"] == pytest.approx(
            sum(r["escalated"] for r in audit) / len(audit), abs=1e-6
        )
        assert metrics["audit"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert frontier[1.01]["escalated_share"] == 1.0 and frontier[0.0]["escalated_share"] == 0.0


def test_max_escalated_caps_the_audit_in_the_pools_share():
    """Issue 14 (defect 7): max_escalated was a count applied to the audit sample too, so with a
    10-row cap on a 100-row pool all 20 doubtful audit rows (of 20) could escalate: the audit and the
    frontier described a cascade escalating 100 % where the pool got 10 %."""
    from synthllm.cascade import escalate, escalation_share, frontier
    from synthllm.params import CascadeParams

    cfg = CascadeParams(
        cheap=["c"],
        expensive="e",
        expensive_reads="x",
        threshold=0.9,
        on_disagreement=False,
        on_flip=False,
        max_escalated=10,
        frontier_thresholds=[0.9],
    )

    def rows(n):
        return [
            {
                "c": {
                    "id": f"r{i}",
                    "label": "neutral",
                    "confidence": 0.1 + 0.7 * i / n,
                    "status": "ok",
                    "gold_label": "neutral",
                }
            }
            for i in range(n)
        ]

    share = escalation_share(cfg, 100)
    assert share == pytest.approx(0.1)
    assert sum(escalate(rows(100), cfg, 0.9, share)) == 10
    audit = rows(20)
    up = escalate(audit, cfg, 0.9, share)
    assert sum(up) == 2 and up[:2] == [True, True]  # the least confident two
    point = frontier({"c": [r["c"] for r in audit]}, [], cfg, "cascade", share)[0]
    assert point["escalated_share"] == pytest.approx(0.1)
    assert sum(escalate(audit, cfg, 0.9, escalation_share(cfg.model_copy(update={"max_escalated": None}), 100))) == 20


def test_an_outage_fails_the_cascade_stage_and_an_accepted_share_keeps_every_row(
    work, repo_root, gold_dir, fake_openai, monkeypatch
):
    """Rows in = rows out for the cascade: with the expensive annotator's server failing, the stage
    exits non-zero and writes nothing; with max_unanswered accepting it, every pool row comes back,
    each escalated one keeping the cheap label with the reason the escalation failed."""
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(work / "cache"))
    fake_openai.fail("503", times=None)
    with pytest.raises(SystemExit) as stopped:
        run(work, repo_root, gold_dir, 0.5, "down")
    assert stopped.value.code == 2 and not (work / "down" / "pool.jsonl").exists()
    rewrite_params(work / "params.yaml", {"annotator_configs.remote.max_unanswered": 1.0})
    metrics = run(work, repo_root, gold_dir, 0.5, "accepted")
    rows = read_jsonl(work / "accepted" / "pool.jsonl")
    assert len(rows) == N_POOL
    escalated = [r for r in rows if r["escalated"]]
    assert escalated and all(
        r["escalation_failed"].startswith("http 503") and r["label"] == "neutral" for r in escalated
    )
    assert (
        metrics["escalation"]["failed"] == len(escalated) and metrics["run"]["unanswered"] == len(escalated) + N_AUDIT
    )
