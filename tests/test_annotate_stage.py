"""The annotate *stage* against the fault-injecting OpenAI-protocol server: kill -9 mid-run, re-run,
same bytes as an uninterrupted run; no completed request sent twice; no row lost; no key leaked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fake_openai import cached_results, fake_openai_fixture  # noqa: F401  (the fixture)
from synthllm.io import read_jsonl, write_jsonl
from synthllm.stages import annotate

PLANTED = "sk-test-PLANTED-stage-8d3e1f0a"
N_POOL = 40


@pytest.fixture
def workdir(tmp_path, repo_root, gold_dir, fake_openai):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["annotators"] = ["remote"]
    params["annotator_configs"] = {"remote": {
        "kind": "llm", "method": "instruct", "prompt": "fa/nli/annotate",
        "backend": {"kind": "openai", "model": "fake-model", "base_urls": [fake_openai.url],
                    "api_key_env": "SYNTHLLM_TEST_KEY", "concurrency": 4, "timeout_s": 2.0,
                    "max_retries": 3, "retry_backoff_s": 0.01}}}
    params["aggregates"] = {}
    params["branches"] = {"remote": "data/annotated/remote.jsonl"}
    params["annotate"]["audit_size"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    pool = [{**r, "id": f"syn-{i}", "intended_label": r["label"]}
            for i, r in enumerate(read_jsonl(gold_dir / "train.jsonl")[:N_POOL])]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    return tmp_path


def argv(work: Path, gold_dir: Path, repo_root: Path, tag: str) -> list[str]:
    return ["--params", str(work / "params.yaml"), "--name", "remote", "--pool", str(work / "generated.jsonl"),
            "--gold", str(gold_dir), "--prompts", str(repo_root / "prompts"),
            "--out", str(work / tag / "annotated.jsonl"), "--audit", str(work / tag / "audit.jsonl"),
            "--metrics", str(work / tag / "metrics.json")]


def test_kill_9_mid_annotate_then_rerun_gives_the_uninterrupted_output(
        workdir, gold_dir, repo_root, fake_openai, monkeypatch):
    monkeypatch.setenv("SYNTHLLM_TEST_KEY", PLANTED)
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(workdir / "cache-ref"))
    annotate.main(argv(workdir, gold_dir, repo_root, "ref"))
    reference = {f: (workdir / "ref" / f).read_bytes() for f in ("annotated.jsonl", "audit.jsonl")}
    rows = [json.loads(x) for x in reference["annotated.jsonl"].splitlines()]
    assert len(rows) == N_POOL and all(r["status"] == "ok" for r in rows)

    fake_openai.reset_counts()
    fake_openai.latency_s = 0.05
    cache = workdir / "cache-kill"
    env = {**os.environ, "SYNTHLLM_TEST_KEY": PLANTED, "SYNTHLLM_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    log = (workdir / "kill.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "synthllm.stages.annotate",
                             *argv(workdir, gold_dir, repo_root, "killed")], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while cached_results(cache / "requests.sqlite") < 12:
        assert proc.poll() is None, (workdir / "kill.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    fake_openai.freeze()  # the kill lands with requests in flight
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake_openai.thaw()
    done = cached_results(cache / "requests.sqlite")
    assert 12 <= done < N_POOL + 10
    assert not (workdir / "killed" / "annotated.jsonl").exists()  # nothing half-written

    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(cache))
    annotate.main(argv(workdir, gold_dir, repo_root, "killed"))
    for name, data in reference.items():
        assert (workdir / "killed" / name).read_bytes() == data
    assert set(fake_openai.completed.values()) == {1}  # no completed request was sent twice
    metrics = json.loads((workdir / "killed" / "metrics.json").read_text())
    assert metrics["run"]["cache_hits"] == done

    # the key reached the server, and nothing the stage wrote holds it
    assert f"Bearer {PLANTED}" in fake_openai.auth_seen
    leaked = [p for p in workdir.rglob("*") if p.is_file() and PLANTED.encode() in p.read_bytes()]
    assert leaked == []
    assert PLANTED not in (workdir / "kill.log").read_text()
