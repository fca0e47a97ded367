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

import yaml

from fake_openai import cached_results
from synthllm.backends import Request, RequestCache, run_requests
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.io import read_jsonl
from synthllm.stages import generate


def _params(tmp_path: Path, repo_root: Path, tiny_lm: Path, num_premises: int, name: str) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["generate"].update(num_premises=num_premises, shots=1, max_new_tokens=24, backend={
        "kind": "transformers", "model_dir": str(tiny_lm), "batch_size": 5})
    params["generate"]["filters"].update(min_script_ratio=0.0, min_words=1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    return path


def _argv(params: Path, gold_dir: Path, repo_root: Path, out: Path) -> list[str]:
    return ["--params", str(params), "--gold", str(gold_dir), "--prompts", str(repo_root / "prompts"),
            "--out", str(out / "generated.jsonl"), "--stats", str(out / "stats.json"),
            "--run-stats", str(out / "run.json")]


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
        proc = subprocess.Popen([sys.executable, "-m", "synthllm.stages.generate",
                                 *_argv(small, gold_dir, repo_root, tmp_path / "killed")],
                                env=env, stdout=log, stderr=log)
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
    assert (tmp_path / "killed" / "generated.jsonl").read_bytes() == (tmp_path / "cold" / "generated.jsonl").read_bytes()


def test_model_dtype_is_part_of_the_cache_key(tiny_lm, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    requests = [Request(prompt="متن: هوا خوب است.\nپاسخ:", choices=("درست", "غلط", "شاید"))]
    _, fp32 = run_requests(TransformersBackend(tiny_lm, dtype="float32"), requests, cache, progress=False)
    _, again = run_requests(TransformersBackend(tiny_lm, dtype="float32"), requests, cache, progress=False)
    _, bf16 = run_requests(TransformersBackend(tiny_lm, dtype="bfloat16"), requests, cache, progress=False)
    assert (fp32.sent, again.sent, bf16.sent) == (1, 0, 1)
