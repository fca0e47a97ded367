"""The annotate *stage* against the fault-injecting OpenAI-protocol server: kill -9 mid-run, re-run,
same bytes as an uninterrupted run; no completed request sent twice; no row lost; no key leaked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from edit_params import annotate_argv, edited_params, fake_backend, load_params, write_params
from fake_openai import cached_results

from synthllm.io import read_jsonl, write_jsonl
from synthllm.stages import annotate

PLANTED = "sk-test-PLANTED-stage-8d3e1f0a"
N_POOL = 40


@pytest.fixture
def workdir(tmp_path, repo_root, gold_dir, fake_openai):
    backend = fake_backend(
        fake_openai.url,
        "fake-model",
        api_key_env="SYNTHLLM_TEST_KEY",
        concurrency=4,
        timeout_s=2.0,
        max_retries=3,
        retry_backoff_s=0.01,
    )
    params = edited_params(
        repo_root / "params.yaml",
        {"annotate.audit_size": 10},
        annotators={"remote": "prompts/fa/nli/annotate.yaml"},
        annotator_configs={
            "remote": {"kind": "llm", "method": "instruct", "prompt": "fa/nli/annotate", "backend": backend}
        },
        aggregates={},
        cascades={},
        branches={"remote": "data/annotated/remote.jsonl"},
    )
    write_params(tmp_path / "params.yaml", params)
    pool = [
        {**r, "id": f"syn-{i}", "intended_label": r["label"]}
        for i, r in enumerate(read_jsonl(gold_dir / "train.jsonl")[:N_POOL])
    ]
    write_jsonl(pool, tmp_path / "generated.jsonl")
    return tmp_path


def test_kill_9_mid_annotate_then_rerun_gives_the_uninterrupted_output(
    workdir, gold_dir, repo_root, fake_openai, monkeypatch
):
    monkeypatch.setenv("SYNTHLLM_TEST_KEY", PLANTED)
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(workdir / "cache-ref"))
    annotate.main(annotate_argv(workdir, gold_dir, repo_root, "ref"))
    reference = {f: (workdir / "ref" / f).read_bytes() for f in ("annotated.jsonl", "audit.jsonl")}
    rows = [json.loads(x) for x in reference["annotated.jsonl"].splitlines()]
    assert len(rows) == N_POOL and all(r["status"] == "ok" for r in rows)

    fake_openai.reset_counts()
    fake_openai.latency_s = 0.05
    cache = workdir / "cache-kill"
    env = {**os.environ, "SYNTHLLM_TEST_KEY": PLANTED, "SYNTHLLM_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    log = (workdir / "kill.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthllm.stages.annotate", *annotate_argv(workdir, gold_dir, repo_root, "killed")],
        env=env,
        stdout=log,
        stderr=log,
    )
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
    annotate.main(annotate_argv(workdir, gold_dir, repo_root, "killed"))
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


def _chat_params(work: Path, fake_url: str, **backend) -> None:
    params = load_params(work / "params.yaml")
    params["annotator_configs"]["remote"]["backend"].update(base_urls=[fake_url], **backend)
    write_params(work / "params.yaml", params)


HOSTILE_ROWS = {"maybe": 1, "prose": 2, "bare": 3, "injection": 4, "extra_key": 5, "json_maybe": 6}


def test_answers_outside_the_requested_form_fail_row_by_row(workdir, gold_dir, repo_root, fake_openai, monkeypatch):
    """A hostile server: 0 wrong labels; each row fails with its reason; counts per reason in metrics."""
    from fake_openai import label_for

    monkeypatch.setenv("SYNTHLLM_TEST_KEY", PLANTED)
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(workdir / "cache"))
    pool = read_jsonl(workdir / "generated.jsonl")
    for fault, row in HOSTILE_ROWS.items():
        fake_openai.fail(fault, times=None, match=pool[row]["hypothesis"])
    annotate.main(annotate_argv(workdir, gold_dir, repo_root, "hostile"))
    rows = read_jsonl(workdir / "hostile" / "annotated.jsonl")
    failed = {r["id"]: r["reason"] for r in rows if r["status"] == "failed"}
    assert failed.keys() == {f"syn-{i}" for i in HOSTILE_ROWS.values()}
    for fault, i in HOSTILE_ROWS.items():
        expected_reason = "schema_violation" if fault in ("extra_key", "json_maybe") else "not_json"
        assert failed[f"syn-{i}"].startswith(expected_reason), (fault, failed[f"syn-{i}"])
    messages = {r["id"]: r for r in rows}
    for r in rows:  # every label given is the server's real answer for that row
        if r["status"] == "ok":
            user = f"متن: {messages[r['id']]['premise']}\nجمله: {messages[r['id']]['hypothesis']}"
            assert r["label"] == label_for(user + "\n\nLabel (entailment, contradiction or neutral):")
    metrics = json.loads((workdir / "hostile" / "metrics.json").read_text())
    assert metrics["pool"]["failure_reasons"] == {"not_json": 4, "schema_violation": 2}


def test_a_parser_fix_rereads_paid_answers_without_a_request(
    workdir, gold_dir, repo_root, fake_openai, monkeypatch, tmp_path
):
    """Plain chat answers; the server says "maybe" for two rows, which the prompt does not accept.
    Adding "maybe" to the neutral words re-reads the cached responses: 0 requests, rows change."""
    monkeypatch.setenv("SYNTHLLM_TEST_KEY", PLANTED)
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(workdir / "cache"))
    _chat_params(workdir, fake_openai.url, structured_output=False)
    pool = read_jsonl(workdir / "generated.jsonl")
    for i in (2, 7):
        fake_openai.fail("maybe", times=None, match=pool[i]["hypothesis"])
    annotate.main(annotate_argv(workdir, gold_dir, repo_root, "before"))
    before = {r["id"]: r for r in read_jsonl(workdir / "before" / "annotated.jsonl")}
    assert {k for k, r in before.items() if r["status"] == "failed"} == {"syn-2", "syn-7"}
    assert before["syn-2"]["reason"].startswith("not_a_label_word: 'maybe'")
    sent = sum(fake_openai.received.values())

    prompts = tmp_path / "prompts"
    shutil.copytree(repo_root / "prompts", prompts)
    spec = yaml.safe_load((prompts / "fa/nli/annotate.yaml").read_text())
    spec["label_words"]["chat"]["neutral"].append("maybe")
    (prompts / "fa/nli/annotate.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    fixed_argv = annotate_argv(workdir, gold_dir, repo_root, "after")
    fixed_argv[fixed_argv.index("--prompts") + 1] = str(prompts)
    annotate.main(fixed_argv)
    assert sum(fake_openai.received.values()) == sent  # not one request reached the server
    after = {r["id"]: r for r in read_jsonl(workdir / "after" / "annotated.jsonl")}
    assert after["syn-2"]["label"] == after["syn-7"]["label"] == "neutral"
    assert all(after[k] == before[k] for k in before if k not in ("syn-2", "syn-7"))
    assert json.loads((workdir / "after" / "metrics.json").read_text())["run"]["sent"] == 0
