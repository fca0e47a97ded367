"""The annotate stage for an intended annotator (label by construction), run as its dvc.yaml command
does, then the quality stage over it and a second annotator: no requests, $0, an empty audit, and
no vote or accuracy made up for the annotator without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edit_params import annotate_argv, edited_params, write_params

from synthllm.io import read_jsonl, write_jsonl
from synthllm.quality import NO_AUDIT
from synthllm.stages import quality

N_POOL = 30


def _workdir(tmp_path, repo_root, gold_dir):
    params = edited_params(
        repo_root / "params.yaml",
        {"annotate.audit_size": 10},
        annotators={"intended": "data/synthetic/generated.jsonl", "gemma": "models/generator"},
        aggregates={},
        cascades={},
        branches={"intended": "data/annotated/intended.jsonl", "gemma": "data/annotated/gemma.jsonl"},
    )
    write_params(tmp_path / "params.yaml", params)
    pool = [
        {**r, "id": f"syn-{i}", "intended_label": r["label"]}
        for i, r in enumerate(read_jsonl(gold_dir / "train.jsonl")[:N_POOL])
    ]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    return pool


def _annotate(tmp_path, gold_dir, repo_root):
    env = {**os.environ, "SYNTHLLM_CACHE_DIR": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    argv = annotate_argv(tmp_path, gold_dir, repo_root, "intended", name="intended")
    return subprocess.run(
        [sys.executable, "-m", "synthllm.stages.annotate", *argv], env=env, capture_output=True, text=True
    )


def test_intended_annotate_stage_then_quality(tmp_path, repo_root, gold_dir):
    pool = _workdir(tmp_path, repo_root, gold_dir)
    done = _annotate(tmp_path, gold_dir, repo_root)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(tmp_path / "intended" / "annotated.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in pool]
    assert all(r["label"] == r["intended_label"] and r["confidence"] == 1.0 for r in rows)
    assert read_jsonl(tmp_path / "intended" / "audit.jsonl") == []
    metrics = json.loads((tmp_path / "intended" / "metrics.json").read_text())
    assert metrics["audit"]["accuracy"] is None and metrics["audit"]["not_applicable"] == NO_AUDIT
    assert metrics["run"]["requests"] == 0 and metrics["run"]["cost_usd"] == 0.0
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())

    # a second annotator's files, written by hand (what its annotate stage would write)
    annotated, audit = tmp_path / "annotated", tmp_path / "audit"
    annotated.mkdir(), audit.mkdir()
    (annotated / "intended.jsonl").write_bytes((tmp_path / "intended" / "annotated.jsonl").read_bytes())
    (audit / "intended.jsonl").write_bytes(b"")
    flipped = [{**r, "annotator": "gemma", "label": "neutral"} if i % 3 == 0 else r for i, r in enumerate(rows)]
    write_jsonl(flipped, annotated / "gemma.jsonl")
    val = read_jsonl(gold_dir / "val.jsonl")[:10]
    write_jsonl(
        [{**r, "gold_label": r["label"], "status": "ok", "confidence": 0.9} for r in val], audit / "gemma.jsonl"
    )
    quality.main(
        ["--params", str(tmp_path / "params.yaml"), "--annotated", str(annotated), "--audit", str(audit)]
        + ["--metrics", str(tmp_path / "quality.json"), "--plots", str(tmp_path / "plots")]
    )
    q = json.loads((tmp_path / "quality.json").read_text())
    assert q["annotators"] == ["gemma", "intended"] and q["n_shared"] == N_POOL
    assert "gemma__intended" in q["pairwise_kappa"]
    assert q["vote_on_audit"]["without_audit"] == ["intended"] and "unavailable" in q["vote_on_audit"]


def test_a_pool_row_without_intended_label_fails_the_stage_naming_it(tmp_path, repo_root, gold_dir):
    pool = _workdir(tmp_path, repo_root, gold_dir)
    del pool[7]["intended_label"]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    done = _annotate(tmp_path, gold_dir, repo_root)
    assert done.returncode != 0 and "syn-7" in done.stderr and "intended_label" in done.stderr
    assert not (tmp_path / "intended" / "annotated.jsonl").exists()
