"""The offline pipeline at a size that can say something: ``presets/offline_large.yaml`` run once,
cold, with real ``dvc repro`` in a copy of this repository.

The copy gets the preset as its ``params.yaml``, its own git and DVC repository, and empty request
and token-state caches (under ``--work``), so the wall time is that of a new user's first run of the
preset. Per stage it records wall time, CPU time and peak RSS (``SYNTHLLM_STAGE_STATS``). What it
keeps, under ``--out`` (committed: ``benchmarks/results/offline_large/``):

* ``results.md`` and the report's CSVs (regimes, comparisons, annotators, aggregates, curves),
* ``generate.json`` (the filter counts), ``annotators/*.json`` (the audit and pool metrics),
  ``annotation_quality.json``,
* ``run.json``: the commit it ran on, the CPU, the total wall time and every stage's.

It prints the pool size and the wall time. It does not compare regimes itself: the report does
(two-level bootstrap over seeds and test items, Holm over comparisons).

    python benchmarks/offline_large.py --work /tmp/offline-large --out benchmarks/results/offline_large
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "presets" / "offline_large.yaml"
# what the copy needs to run the DAG: the code, prompts, DAG and the preset as params.yaml
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", ".dvc", "dvc.lock", "data", "models", "metrics", "plots", "reports", ".cache", "__pycache__",
    "*.egg-info", "notebooks", "benchmarks", "tests", "docs",
)  # fmt: skip
KEPT = ("reports/results.md", "reports/*.csv", "metrics/generate.json", "metrics/annotation_quality.json")


def _run(cmd: list[str], cwd: Path, env: dict, log: Path | None = None) -> float:
    started = time.perf_counter()
    with open(log, "a") if log else open(os.devnull, "w") as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}); log: {log}")
    return time.perf_counter() - started


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _commit() -> str:
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src", "dvc.yaml", "presets"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return rev.stdout.strip() + ("+uncommitted" if dirty else "")


def run_preset(work: Path, mirror: Path) -> tuple[Path, dict]:
    repo = work / "repo"
    if repo.exists():
        raise SystemExit(f"{repo} exists: give an empty --work (the run must start cold)")
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORE)
    shutil.copy(PRESET, repo / "params.yaml")
    stats, log = work / "stages.jsonl", work / "repro.log"
    env = {
        **os.environ,
        "SYNTHLLM_FARSTAIL_MIRROR": str(mirror),
        "SYNTHLLM_CACHE_DIR": str(work / "cache"),
        "SYNTHLLM_STAGE_STATS": str(stats),
        "PYTHONPATH": str(repo / "src"),  # the copy's code, whatever synthllm is installed
        "GIT_AUTHOR_NAME": "offline-large",
        "GIT_AUTHOR_EMAIL": "offline-large@synthllm.invalid",
        "GIT_COMMITTER_NAME": "offline-large",
        "GIT_COMMITTER_EMAIL": "offline-large@synthllm.invalid",
    }
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "offline_large preset"],  # DVCLive wants a revision
        [*dvc, "init", "-q"],
        [*dvc, "config", "core.analytics", "false"],
    ):
        _run(cmd, repo, env)
    repro_s = _run([*dvc, "repro"], repo, env, log)
    stages = [json.loads(line) for line in stats.read_text().splitlines()]
    return repo, {
        "commit": _commit(),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "repro_wall_s": round(repro_s, 1),
        "stages": stages,
        "stage_wall_s_total": round(sum(s["wall_s"] for s in stages), 1),
    }


def keep(repo: Path, out: Path, run: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for pattern in KEPT:
        for path in sorted(repo.glob(pattern)):
            shutil.copy(path, out / path.name)
    (out / "annotators").mkdir(exist_ok=True)
    for path in sorted((repo / "metrics" / "annotators").glob("*.json")):
        shutil.copy(path, out / "annotators" / path.name)
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="an empty folder for the copy and its caches")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "offline_large")
    ap.add_argument(
        "--mirror",
        type=Path,
        default=Path(os.environ.get("SYNTHLLM_FARSTAIL_MIRROR") or ROOT.parent / "shared" / "data" / "farstail"),
        help="FarsTail mirror folder (default: $SYNTHLLM_FARSTAIL_MIRROR, else ../shared/data/farstail)",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    repo, run = run_preset(args.work.resolve(), args.mirror.resolve())
    keep(repo, args.out, run)
    kept = json.loads((repo / "metrics" / "generate.json").read_text())["kept"]
    print(f"offline_large: {kept} kept synthetic pairs; cold dvc repro {run['repro_wall_s']:.0f} s on {run['cpu']}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
