"""Nothing lost, nothing shrunk: an outage fails the stage instead of recording a smaller pool.

A real OpenAI-protocol server on 127.0.0.1 goes away in the middle of a real ``dvc repro`` of an
annotate stage: the stage exits non-zero with one message (how many got no answer, why, and that a
re-run sends only those), every answer received is cached, and ``dvc status`` still lists the
stage. With the server back on the same port, ``dvc repro`` completes every row and re-sends none
of the requests answered before. Then rows in = rows out for every way a row can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edit_params import annotate_argv, fake_backend, load_params, rewrite_params, write_params
from fake_openai import FakeOpenAI, body_key, cached_results

from synthllm.io import read_jsonl, write_jsonl
from synthllm.stages import annotate

N_POOL, N_AUDIT = 30, 10
STAGE = """stages:
  annotate:
    cmd: >-
      python -m synthllm.stages.annotate --name remote --pool generated.jsonl --gold {gold} --prompts {prompts}
      --out data/annotated/remote.jsonl --audit data/audit/remote.jsonl --metrics metrics/remote.json
    deps: [generated.jsonl]
    params: [annotator_configs.remote]
    outs: [data/annotated/remote.jsonl, data/audit/remote.jsonl]
    metrics:
      - metrics/remote.json: {{cache: false}}
"""


def _params(repo_root: Path, url: str, **overrides) -> dict:
    fields = {"api_key_env": "SYNTHLLM_TEST_KEY", "concurrency": 1, "timeout_s": 2.0, "max_retries": 1}
    backend = fake_backend(url, "fake-model", **{**fields, "retry_backoff_s": 0.01, **overrides})
    params = load_params(repo_root / "params.yaml")
    params["annotators"] = {"remote": "prompts/fa/nli/annotate.yaml"}
    params["annotator_configs"] = {
        "remote": {"kind": "llm", "method": "instruct", "prompt": "fa/nli/annotate", "backend": backend}
    }
    params["aggregates"], params["cascades"] = {}, {}
    params["branches"] = {"remote": "data/annotated/remote.jsonl"}
    params["annotate"]["audit_size"] = N_AUDIT
    return params


def _pool(gold_dir: Path) -> list[dict]:
    return [
        {**r, "id": f"syn-{i}", "intended_label": r["label"]}
        for i, r in enumerate(read_jsonl(gold_dir / "train.jsonl")[:N_POOL])
    ]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_server_that_goes_away_fails_the_stage_and_dvc_repro_resumes(tmp_path, repo_root, gold_dir):
    server = FakeOpenAI(latency_s=0.05).start()
    port = server._server.server_address[1]  # noqa: SLF001  (brought back on the same port below)
    repo = tmp_path / "repo"
    repo.mkdir()
    write_params(repo / "params.yaml", _params(repo_root, server.url))
    (repo / "dvc.yaml").write_text(STAGE.format(gold=gold_dir, prompts=repo_root / "prompts"))
    write_jsonl(_pool(gold_dir), repo / "generated.jsonl")
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "SYNTHLLM_TEST_KEY": "sk-test-outage",
        "SYNTHLLM_CACHE_DIR": str(cache),
        "TQDM_DISABLE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
    ):
        assert _run(cmd, repo, env).returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while cached_results(cache / "requests.sqlite") < 12:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    server.stop()  # the vLLM restart / exhausted quota: every further request is refused
    answered_before = set(server.completed)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, output
    cached = cached_results(cache / "requests.sqlite")
    unanswered = N_POOL + N_AUDIT - cached
    assert 12 <= cached < N_POOL + N_AUDIT
    assert f"annotate[remote]: {unanswered} of {N_POOL + N_AUDIT} requests got no answer" in output, output
    assert "re-run `dvc repro` to send only those" in output
    assert not (repo / "data" / "annotated" / "remote.jsonl").exists()  # nothing shrunk was written
    status = json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], repo, env).stdout)
    assert "annotate" in status  # DVC recorded nothing: the stage is still to run

    back = FakeOpenAI().start(port=port)
    try:
        done = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = read_jsonl(repo / "data" / "annotated" / "remote.jsonl")
        audit = read_jsonl(repo / "data" / "audit" / "remote.jsonl")
        assert len(rows) == N_POOL and len(audit) == N_AUDIT
        assert all(r["status"] == "ok" for r in rows + audit)
        assert sum(back.received.values()) == unanswered  # only what had no answer was sent
        assert not answered_before & {body_key(b) for b in back.bodies}  # 0 answered requests re-sent
        metrics = json.loads((repo / "metrics" / "remote.json").read_text())
        assert metrics["run"]["cache_hits"] == cached and metrics["run"]["unanswered"] == 0
        assert "up to date" in _run([sys.executable, "-m", "dvc", "status"], repo, env).stdout
    finally:
        back.stop()


# --- rows in = rows out ---------------------------------------------------------------------------

UNUSABLE = ("length", "empty", "maybe", "prose", "bare", "extra_key", "out_of_set")
NO_ANSWER = ("503", "401", "400", "hang", "drop", "malformed")  # malformed: a corrupt body, sent again


def _faulted(tmp_path, repo_root, gold_dir, fake_openai, faults, **backend) -> Path:
    write_params(tmp_path / "params.yaml", _params(repo_root, fake_openai.url, concurrency=4, **backend))
    pool = _pool(gold_dir)
    write_jsonl(pool, tmp_path / "generated.jsonl")
    for i, fault in enumerate(faults):
        fake_openai.fail(fault, times=None, match=pool[i]["hypothesis"])
    fake_openai.hang_s = 3.0  # past timeout_s: a hang is a timeout
    return tmp_path


def _rows_in_rows_out(work: Path, tag: str) -> tuple[list[dict], dict]:
    rows = read_jsonl(work / tag / "annotated.jsonl")
    metrics = json.loads((work / tag / "metrics.json").read_text())
    assert len(rows) == N_POOL  # rows in = rows out
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(r["label"] is None and r["reason"] for r in failed)  # every failure says why
    assert all(r["label"] is not None and r["reason"] is None for r in rows if r["status"] == "ok")
    assert metrics["pool"]["failed"] == len(failed)
    # the run's tallies are the rows as written (pool and audit together), whatever pass answered them
    audit = read_jsonl(work / tag / "audit.jsonl")
    assert metrics["run"]["failures"] == len(failed) + sum(r["status"] == "failed" for r in audit)
    return failed, metrics


def test_unusable_answers_are_failed_rows_with_reasons_and_the_stage_succeeds(
    tmp_path, repo_root, gold_dir, fake_openai, monkeypatch
):
    monkeypatch.setenv("SYNTHLLM_TEST_KEY", "sk-test-rows")
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    work = _faulted(tmp_path, repo_root, gold_dir, fake_openai, UNUSABLE)
    annotate.main(annotate_argv(work, gold_dir, repo_root, "unusable"))  # exits 0: every request was answered
    failed, metrics = _rows_in_rows_out(work, "unusable")
    assert {r["id"] for r in failed} == {f"syn-{i}" for i in range(len(UNUSABLE))}
    assert metrics["run"]["unanswered"] == 0


def test_unanswered_requests_fail_the_stage_unless_a_share_is_accepted(
    tmp_path, repo_root, gold_dir, fake_openai, monkeypatch
):
    monkeypatch.setenv("SYNTHLLM_TEST_KEY", "sk-test-rows")
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
    work = _faulted(tmp_path, repo_root, gold_dir, fake_openai, NO_ANSWER)
    with pytest.raises(SystemExit) as stopped:
        annotate.main(annotate_argv(work, gold_dir, repo_root, "strict"))
    assert stopped.value.code == 2 and not (work / "strict" / "annotated.jsonl").exists()
    rewrite_params(work / "params.yaml", {"annotator_configs.remote.max_unanswered": 0.2})  # 6 of 40 fit in 8
    annotate.main(annotate_argv(work, gold_dir, repo_root, "accepted"))
    failed, metrics = _rows_in_rows_out(work, "accepted")
    assert {r["id"] for r in failed} == {f"syn-{i}" for i in range(len(NO_ANSWER))}
    assert metrics["run"]["unanswered"] == len(NO_ANSWER)
    reasons = {r["id"]: r["reason"] for r in failed}
    assert reasons["syn-0"].startswith("http 503") and reasons["syn-1"].startswith("http 401")
