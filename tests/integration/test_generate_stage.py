"""The generate stage with a real (tiny) local LM: a row's text depends on its own request only.

A cold run, a run killed with SIGKILL and re-run, and a run with more premises (so other rows share
each batch) write byte-identical hypotheses for the rows they share; changing the model's dtype is
a different cache entry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edit_params import fake_backend, load_params, write_params
from fake_openai import cached_results

from synthllm.backends import Request, RequestCache, run_requests
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.io import read_jsonl
from synthllm.stages import generate


def _params(tmp_path: Path, repo_root: Path, tiny_lm: Path, num_premises: int, name: str) -> Path:
    params = load_params(repo_root / "params.yaml")
    params["generate"].update(
        num_premises=num_premises,
        shots=1,
        max_new_tokens=24,
        backend={"kind": "transformers", "model_dir": str(tiny_lm), "batch_size": 5},
    )
    params["generate"]["filters"].update(min_script_ratio=0.0, min_words=1)
    return write_params(tmp_path / f"{name}.yaml", params)


def _argv(params: Path, gold_dir: Path, repo_root: Path, out: Path) -> list[str]:
    return [
        "--params",
        str(params),
        "--gold",
        str(gold_dir),
        "--prompts",
        str(repo_root / "prompts"),
        "--out",
        str(out / "generated.jsonl"),
        "--stats",
        str(out / "stats.json"),
        "--run-stats",
        str(out / "run.json"),
    ]


def _texts(out: Path) -> dict[str, str]:
    return {r["id"]: r["hypothesis"] for r in read_jsonl(out / "generated.jsonl")}


def test_rows_do_not_depend_on_their_batch_resume_or_run_size(tmp_path, repo_root, gold_dir, tiny_lm, monkeypatch):
    small = _params(tmp_path, repo_root, tiny_lm, 6, "small")
    large = _params(tmp_path, repo_root, tiny_lm, 9, "large")
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache-cold"))
    generate.main(_argv(small, gold_dir, repo_root, tmp_path / "cold"))
    cold = _texts(tmp_path / "cold")
    assert len(cold) >= 6  # 18 requests, most kept (filters loosened for the tiny model)

    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache-large"))
    generate.main(_argv(large, gold_dir, repo_root, tmp_path / "large"))
    larger = _texts(tmp_path / "large")
    assert set(cold) < set(larger)  # the first 6 premises are shared; their batches are not
    assert {k: larger[k] for k in cold} == cold

    cache = tmp_path / "cache-killed"
    env = {**os.environ, "SYNTHLLM_CACHE_DIR": str(cache), "TQDM_DISABLE": "1"}
    with (tmp_path / "kill.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "synthllm.stages.generate", *_argv(small, gold_dir, repo_root, tmp_path / "killed")],
            env=env,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 120
    while cached_results(cache / "requests.sqlite") < 5:  # one batch of 5 done
        assert proc.poll() is None, (tmp_path / "kill.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = cached_results(cache / "requests.sqlite")
    assert 5 <= done < 18 and not (tmp_path / "killed" / "generated.jsonl").exists()
    monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(cache))
    generate.main(_argv(small, gold_dir, repo_root, tmp_path / "killed"))
    run = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert run["cache_hits"] == done and run["sent"] == 18 - done
    assert (tmp_path / "killed" / "generated.jsonl").read_bytes() == (
        tmp_path / "cold" / "generated.jsonl"
    ).read_bytes()


def test_model_dtype_is_part_of_the_cache_key(tiny_lm, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    requests = [Request(prompt="متن: هوا خوب است.\nپاسخ:", choices=("درست", "غلط", "شاید"))]
    _, fp32 = run_requests(TransformersBackend(tiny_lm, dtype="float32"), requests, cache, progress=False)
    _, again = run_requests(TransformersBackend(tiny_lm, dtype="float32"), requests, cache, progress=False)
    _, bf16 = run_requests(TransformersBackend(tiny_lm, dtype="bfloat16"), requests, cache, progress=False)
    assert (fp32.sent, again.sent, bf16.sent) == (1, 0, 1)


def test_an_outage_fails_generate_and_every_request_is_kept_or_dropped_with_a_reason(
    tmp_path, repo_root, gold_dir, monkeypatch
):
    """Rows in = rows out for generate, over HTTP: requests whose answers could not be read are
    dropped with a counted reason (stage exits 0); requests with no answer fail the stage unless
    generate.max_unanswered accepts them, and then they are counted as dropped too."""
    from fake_openai import FakeOpenAI

    server = FakeOpenAI().start()
    try:
        monkeypatch.setenv("SYNTHLLM_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("NO_KEY_NEEDED", "sk-test-generate")
        backend = fake_backend(
            server.url,
            "m",
            endpoint="completions",
            api_key_env="NO_KEY_NEEDED",
            concurrency=2,
            timeout_s=5,
            max_retries=1,
            retry_backoff_s=0.01,
        )
        params = load_params(repo_root / "params.yaml")
        params["generate"].update(num_premises=6, shots=1, backend=backend)
        path = write_params(tmp_path / "p.yaml", params)
        server.fail("length", times=2, endpoint="completions")  # answered, unusable: dropped with a reason
        generate.main(_argv(path, gold_dir, repo_root, tmp_path / "a"))  # every request answered: exit 0
        stats = json.loads((tmp_path / "a" / "stats.json").read_text())
        kept = len(read_jsonl(tmp_path / "a" / "generated.jsonl"))
        assert stats["generated"] == 18 == kept + sum(v for k, v in stats.items() if k.startswith("dropped_"))
        server.fail("503", times=None, endpoint="completions")  # the server goes away
        params["generate"]["seed"] = 99  # new requests, none cached
        write_params(path, params)
        try:
            generate.main(_argv(path, gold_dir, repo_root, tmp_path / "b"))
        except SystemExit as stopped:
            assert stopped.code == 2
        else:
            raise AssertionError("generate exited 0 with every request unanswered")
        assert not (tmp_path / "b" / "generated.jsonl").exists()
        params["generate"]["max_unanswered"] = 1.0
        write_params(path, params)
        generate.main(_argv(path, gold_dir, repo_root, tmp_path / "c"))
        stats = json.loads((tmp_path / "c" / "stats.json").read_text())
        assert stats["generated"] == 18 and len(read_jsonl(tmp_path / "c" / "generated.jsonl")) == 0
        assert sum(v for k, v in stats.items() if k.startswith("dropped_")) == 18
    finally:
        server.stop()
