"""The train stage on the HF Trainer path with a tiny real encoder: seed-first model building,
per-epoch checkpoints that a killed run resumes from (same final model as an uninterrupted run),
and a two-process launch (torchrun, CPU/gloo) that writes every output once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from edit_params import load_params, write_params

from synthllm.classifiers import load_classifier
from synthllm.io import read_frame, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory, repo_root, gold_dir, tiny_encoder):
    work = tmp_path_factory.mktemp("train")
    params = load_params(repo_root / "params.yaml")
    params["train"] = {
        "classifier": {
            "kind": "hf",
            "model": str(tiny_encoder),
            "max_length": 48,
            "batch_size": 8,
            "learning_rate": 1e-3,
        },
        "gold_epochs": 3,
        "synthetic_epochs": 2,
        "seeds": [4],
        "launcher": "python -m",
    }
    write_params(work / "params.yaml", params)
    gold = work / "gold"
    gold.mkdir()
    for split, n in (("train", 1200), ("val", 32), ("test", 32)):
        write_jsonl(read_frame(gold_dir / f"{split}.jsonl").head(n).to_dict("records"), gold / f"{split}.jsonl")
    syn = read_frame(gold_dir / "val.jsonl").tail(48).assign(premise_id=lambda d: d["premise"])
    write_jsonl(syn.head(40).to_dict("records"), work / "split" / "train.jsonl")
    write_jsonl(syn.tail(8).to_dict("records"), work / "split" / "dev.jsonl")
    return work


def argv(work: Path, tag: str) -> list[str]:
    return [
        "--params",
        str(work / "params.yaml"),
        "--regime",
        "warmup",
        "--gold",
        str(work / "gold"),
        "--synthetic",
        str(work / "split"),
        "--out",
        str(work / tag / "model"),
        "--metrics",
        str(work / tag / "metrics.json"),
        "--curves",
        str(work / tag / "curves"),
    ]


def env(work: Path, cache: str) -> dict:
    return {
        **os.environ,
        "SYNTHLLM_CACHE_DIR": str(work / cache),
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }


def train(work: Path, tag: str, cache: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synthllm.stages.train", *argv(work, tag)],
        env=env(work, cache),
        capture_output=True,
        text=True,
    )
    problems = [
        line
        for line in done.stderr.splitlines()
        if "rror" in line and "dulwich" not in line and "meta_path" not in line
    ]  # dulwich prints noise at interpreter shutdown
    assert done.returncode == 0, problems[-15:]


def predictions(model: Path, work: Path) -> np.ndarray:
    test = read_frame(work / "gold" / "test.jsonl")
    return load_classifier(model).predict_proba(list(test["premise"]), list(test["hypothesis"]))


def test_killed_train_stage_resumes_from_its_checkpoints(stage_dir):
    work = stage_dir
    train(work, "ref", "c-ref")
    reference = predictions(work / "ref" / "model" / "seed-4", work)

    log = (work / "kill.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthllm.stages.train", *argv(work, "killed")],
        env=env(work, "c-kill"),
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 300

    # wait until the gold phase (phase 1) has saved a whole epoch checkpoint (its trainer_state.json,
    # which the Trainer writes last, parses), then kill mid-phase
    def whole_checkpoint() -> bool:
        for state in (work / "c-kill").glob("checkpoints/*/phase-1/work/checkpoint-*/trainer_state.json"):
            try:
                json.loads(state.read_text())
                return True
            except ValueError:
                pass
        return False

    while not whole_checkpoint():
        assert proc.poll() is None, (work / "kill.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "killed" / "metrics.json").exists()
    train(work, "killed", "c-kill")
    report = json.loads((work / "killed" / "metrics.json").read_text())
    phases = report["seeds"]["4"]["phases"]
    assert [p["source"] for p in phases] == ["synthetic", "gold"] and phases[1]["resumed"] is True
    np.testing.assert_allclose(predictions(work / "killed" / "model" / "seed-4", work), reference, atol=1e-5)
    assert not list((work / "c-kill").glob("checkpoints/*"))  # removed once the outputs are written
    curves = work / "killed" / "curves" / "seed-4" / "plots" / "metrics" / "val" / "accuracy.tsv"
    assert curves.is_file()


def test_two_process_launch_writes_each_output_once(stage_dir):
    work = stage_dir
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "-m", "synthllm.stages.train", *argv(work, "ddp")],
        env=env(work, "c-ddp"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = [line for line in proc.stderr.splitlines() if "synthllm.stages.train: saved" in line]
    assert len(saved) == 2, saved  # the model and the metrics, by rank 0 only
    assert (work / "ddp" / "model" / "seed-4" / "classifier.json").is_file()
    assert json.loads((work / "ddp" / "metrics.json").read_text())["seeds"]["4"]["phases"][1]["rows"] == 1200
