"""A cold `dvc repro` of a commit, as a new user runs it: a fresh clone, empty DVC, request and
token-state caches, this interpreter's packages. It prints (and with ``--out`` writes) the total
wall time, each stage's wall time as DVC's log shows it (the stage's process plus DVC's own work
around it: hashing, caching, the lock file), and for train and evaluate stages the overhead beyond
training: the stage's time minus the seconds its seeds spent training (``train_s`` in its metrics).

    python benchmarks/cold_repro.py --rev HEAD --work /tmp/cold --out benchmarks/results/cold_repro.md

``--log LOG --repo DIR`` re-reads a finished run instead (a log written by this script, or any
``dvc repro`` output whose lines start with the seconds since the start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(rev: str, work: Path, mirror: Path) -> tuple[Path, Path]:
    """Clone ``rev`` into ``work/repo`` and run `dvc repro` there; the log's lines carry the seconds
    since the start."""
    repo, log = work / "repo", work / "repro.log"
    if repo.exists():
        raise SystemExit(f"{repo} exists: give an empty --work (the run must start cold)")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", rev], check=True)
    env = {
        **os.environ,
        "SYNTHLLM_FARSTAIL_MIRROR": str(mirror),
        "SYNTHLLM_CACHE_DIR": str(work / "cache"),
        "SYNTHLLM_STAGE_STATS": str(work / "stages.jsonl"),
        "PYTHONPATH": str(repo / "src"),  # the clone's code, whatever synthllm is installed
    }
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(f"{time.perf_counter() - started:.1f} {line}")
        code = proc.wait()
        out.write(f"{time.perf_counter() - started:.1f} exit {code}\n")
    if code:
        raise SystemExit(f"dvc repro failed (exit {code}); log: {log}")
    return repo, log


def stage_times(log: Path) -> tuple[dict[str, float], float]:
    """Each stage's seconds from its 'Running stage' line to the next one's (or the end)."""
    starts: list[tuple[float, str]] = []
    end = 0.0
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            end = float(stamp)
        except ValueError:
            continue
        found = re.search(r"Running stage '(?:.*:)?([^']+)'", rest)
        if found:
            starts.append((end, found.group(1)))
    return {name: (starts[i + 1][0] if i + 1 < len(starts) else end) - t for i, (t, name) in enumerate(starts)}, end


def overheads(repo: Path, times: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Train stages: (stage seconds, seconds beyond its seeds' training)."""
    out = {}
    for name, seconds in times.items():
        if name == "train_gold_only" or name.startswith("train@"):
            run = "gold__gold_only" if name == "train_gold_only" else name.split("@", 1)[1].replace("-", "__", 1)
            metrics = repo / "metrics" / "train" / f"{run}.json"
            if metrics.is_file():
                trained = sum(s["train_s"] for s in json.loads(metrics.read_text())["seeds"].values())
                out[name] = (seconds, seconds - trained)
    return out


def report(repo: Path, log: Path, rev: str) -> str:
    times, total = stage_times(log)
    families: dict[str, list[float]] = defaultdict(list)
    for name, seconds in times.items():
        families[name.split("@")[0]].append(seconds)
    extra = overheads(repo, times)
    evaluate = {n: s for n, s in times.items() if n.startswith("evaluate")}
    lines = [
        f"# Cold `dvc repro` of {rev}",
        "",
        f"Total: **{total:.0f} s** for {len(times)} stages.",
        "",
        "| stage family | stages | seconds | largest |",
        "| --- | --- | --- | --- |",
        *(
            f"| {f} | {len(v)} | {sum(v):.0f} | {max(v):.0f} |"
            for f, v in sorted(families.items(), key=lambda kv: -sum(kv[1]))
        ),
        "",
    ]
    if extra:
        worst = max(extra.items(), key=lambda kv: kv[1][1])
        lines += [
            f"Train stages: beyond their seeds' training, median {sorted(o for _, o in extra.values())[len(extra) // 2]:.1f} s, "
            f"largest {worst[1][1]:.1f} s ({worst[0]}; DVC's own work included).",
        ]
    if evaluate:
        lines += [
            f"Evaluate stages: {len(evaluate)}, {min(evaluate.values()):.0f}–{max(evaluate.values()):.0f} s each (everything included)."
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--work", type=Path, help="an empty folder for the clone and its caches")
    ap.add_argument("--log", type=Path, help="re-read a finished run's log instead of running")
    ap.add_argument("--repo", type=Path, help="with --log: the repository it ran in")
    ap.add_argument(
        "--mirror",
        type=Path,
        default=Path(os.environ.get("SYNTHLLM_FARSTAIL_MIRROR") or ROOT.parent / "shared" / "data" / "farstail"),
    )
    ap.add_argument("--out", type=Path, help="write the markdown here")
    args = ap.parse_args()
    if args.log:
        repo, log = args.repo or args.log.parent / "repo", args.log
    else:
        if args.work is None:
            raise SystemExit("--work is needed to run (or --log to re-read a run)")
        args.work.mkdir(parents=True, exist_ok=True)
        repo, log = run(args.rev, args.work.resolve(), args.mirror.resolve())
    text = report(repo, log, args.rev)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
