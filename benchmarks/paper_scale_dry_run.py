"""A simulated paper-scale run: the paper preset's DAG at N synthetic rows, with real `dvc repro`,
against local OpenAI-protocol servers on 127.0.0.1 instead of vLLM and the OpenAI API.

What is real: every stage, DVC, the request cache, the HTTP client (generation through
``/v1/completions`` over two replicas, annotation through ``/v1/chat/completions`` with a JSON
schema and 20 top logprobs per token, as GPT-4o-mini and Aya-23 on vLLM answer), the offline
classifier annotator and downstream classifier (``sklearn_sgd``; the preset's ParsBERT needs a GPU
and the hub). What is simulated: the models. The servers (this file, ``--serve``) answer after a
fixed latency with realistic bodies: a unique Persian sentence of 8–14 words per generation
request (so the filters keep most), a ``{"label": ...}`` answer whose tokens carry 20 alternatives
each, and token counts in ``usage``. Learning curves are switched off (they re-train every regime
per budget; at 100k rows that is a GPU job).

Per stage it records wall time, CPU time and peak RSS (``SYNTHLLM_STAGE_STATS``), requests/s, output
and cache sizes; then the time of ``dvc status`` and of a no-op ``dvc repro``.

    python benchmarks/paper_scale_dry_run.py --rows 20000 [--rows 100000] --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "شهر",
    "کتاب",
    "دریا",
    "باغ",
    "کوه",
    "مدرسه",
    "دانشجو",
    "پزشک",
    "بیمار",
    "بازار",
    "خانه",
    "خیابان",
    "رودخانه",
    "جنگل",
    "کارخانه",
    "دولت",
    "مردم",
    "کودک",
    "مادر",
    "پدر",
    "معلم",
    "کشاورز",
    "باران",
    "برف",
    "آفتاب",
    "زمستان",
    "تابستان",
    "پاییز",
    "بهار",
    "امروز",
    "دیروز",
    "فردا",
    "همیشه",
    "هرگز",
    "بزرگ",
    "کوچک",
    "زیبا",
    "آرام",
    "شلوغ",
    "قدیمی",
    "جدید",
    "گرم",
    "سرد",
    "روشن",
    "تاریک",
    "خوب",
    "بد",
    "سریع",
    "کند",
    "بلند",
    "کوتاه",
    "نزدیک",
    "دور",
    "رفت",
    "آمد",
    "دید",
    "خرید",
    "فروخت",
    "نوشت",
    "خواند",
    "ساخت",
    "گفت",
    "شنید",
    "ماند",
    "برگشت",
    "کار",
    "درس",
    "غذا",
    "آب",
    "نان",
    "میوه",
    "گل",
    "درخت",
    "ماشین",
    "قطار",
    "هواپیما",
    "کشتی",
    "جاده",
    "پل",
    "ساختمان",
    "بیمارستان",
    "دانشگاه",
    "کتابخانه",
    "موزه",
    "پارک",
    "ورزشگاه",
]
LABELS = ("entailment", "contradiction", "neutral")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def sentence(prompt: str, seed: int) -> str:
    h = _digest(f"{prompt}|{seed}")
    n = 8 + h % 7
    return " " + " ".join(WORDS[(h >> (5 * i)) % len(WORDS)] for i in range(n)) + ".\n"


def chat_answer(body: dict) -> dict:
    question = str(body["messages"][-1]["content"])
    label = LABELS[_digest(question) % 3]
    pieces = ['{"', "label", '":"', label[:3], label[3:], '"}']
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "".join(pieces)}}
    if body.get("logprobs"):
        k = int(body.get("top_logprobs") or 0)

        def alternatives(position: int) -> list[dict]:  # the label is decided at position 3
            tokens = ([lab[:3] for lab in LABELS] if position == 3 else []) + [f"t{j}" for j in range(k)]
            return [{"token": t, "logprob": -0.05 - j, "bytes": list(t.encode())} for j, t in enumerate(tokens[:k])]

        choice["logprobs"] = {
            "content": [
                {"token": t, "logprob": -0.05, "bytes": list(t.encode()), "top_logprobs": alternatives(i)}
                for i, t in enumerate(pieces)
            ]
        }
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(question) // 3 + 60,
            "completion_tokens": 7,
            "total_tokens": len(question) // 3 + 67,
        },
    }


def completion_answer(body: dict) -> dict:
    prompt = body.get("prompt", "")
    text = sentence(prompt, int(body.get("seed") or 0))
    cut = text.index("\n")  # the stop string
    return {
        "id": "cmpl-sim",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "text": text[:cut], "finish_reason": "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": len(prompt) // 3,
            "completion_tokens": len(text.split()) * 2,
            "total_tokens": len(prompt) // 3 + len(text.split()) * 2,
        },
    }


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: dict) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if path.endswith("/chat/completions"):
                await asyncio.sleep(latency["chat"])
                payload = chat_answer(body)
            elif path.endswith("/completions"):
                await asyncio.sleep(latency["completions"])
                payload = completion_answer(body)
            else:
                payload = {"object": "list", "data": [{"id": "sim", "object": "model"}]}
            data = json.dumps(payload, ensure_ascii=False).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(data)).encode()
                + b"\r\n\r\n"
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve(port: int, latency: dict) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _handle(r, w, latency), "127.0.0.1", port, backlog=4096)
        print(f"serving {port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params_for(rows: int, urls: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from synthllm.params import parse_params

    # every key spelled out (dvc.yaml names keys, e.g. task and gold.source, that the preset leaves
    # to their defaults, and `dvc repro` refuses a params.yaml without them)
    params = parse_params(yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text())).model_dump(mode="json")
    samples = math.ceil(rows / (3 * 2463))
    params["generate"].update(num_premises=math.ceil(rows / (3 * samples)), samples_per_label=samples)
    params["generate"]["backend"].update(base_urls=urls, served_identity="simulated generator", concurrency=128)
    for name in ("gpt4o_mini", "aya23"):
        params["annotator_configs"][name]["backend"].update(
            base_urls=urls, use_batch_api=False, concurrency=128, served_identity=f"simulated {name}"
        )
    sgd = {"kind": "sklearn_sgd", "n_features": 262144, "alpha": 0.0001}
    params["annotator_training"]["classifier"] = sgd
    params["train"].update(classifier=sgd, launcher="python -m")
    params["curves"] = {"budgets": [], "pool_budget": None, "pool_fractions": [1.0]}
    return parse_params(params).model_dump(mode="json")


def run(cmd: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def dry_run(rows: int, work: Path, mirror: Path) -> dict:
    servers, urls = [], []
    for _ in range(2):  # two replicas of each simulated model
        port = _free_port()
        servers.append(
            subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
        )
        servers[-1].stdout.readline()
        urls.append(f"http://127.0.0.1:{port}/v1")
    repo = work / f"repo-{rows}"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            ".dvc",
            "data",
            "models",
            "metrics",
            "plots",
            "reports",
            ".cache",
            "__pycache__",
            "*.egg-info",
            "notebooks",
            "benchmarks",
            "tests",
        ),
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params_for(rows, urls), allow_unicode=True, sort_keys=False))
    stats = work / f"stages-{rows}.jsonl"
    env = {
        **os.environ,
        "SYNTHLLM_FARSTAIL_MIRROR": str(mirror),
        "SYNTHLLM_CACHE_DIR": str(work / f"cache-{rows}"),
        "SYNTHLLM_STAGE_STATS": str(stats),
        "TQDM_DISABLE": "1",
        "OPENAI_API_KEY": "sk-simulated",
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    dvc = [sys.executable, "-m", "dvc"]
    try:
        for cmd in (
            ["git", "init", "-q"],
            ["git", "commit", "-q", "--allow-empty", "-m", "dry run"],  # DVCLive wants a rev
            [*dvc, "init", "-q"],
            [*dvc, "config", "core.analytics", "false"],
        ):
            run(cmd, repo, env)
        repro_s = run([*dvc, "repro"], repo, env)
        status_s = run([*dvc, "status"], repo, env)
        noop_s = run([*dvc, "repro"], repo, env)
    finally:
        for s in servers:
            s.terminate()
    by_stage = [json.loads(line) for line in stats.read_text().splitlines()]
    metrics = repo / "metrics"
    rates = {"generate": json.loads((metrics / "generate_run.json").read_text())}
    for f in sorted((metrics / "annotators").glob("*.json")):
        run_stats = json.loads(f.read_text()).get("run")
        if run_stats:
            rates[f"annotate:{f.stem}"] = run_stats
    return {
        "rows": rows,
        "kept": json.loads((metrics / "generate.json").read_text())["kept"],
        "repro_s": round(repro_s, 1),
        "status_s": round(status_s, 2),
        "noop_repro_s": round(noop_s, 2),
        "stages": by_stage,
        "requests_per_s": {k: round(v["sent"] / v["wall_s"], 1) for k, v in rates.items() if v.get("sent")},
        "sizes_mib": {
            "data": round(size_mib(repo / "data"), 1),
            "models": round(size_mib(repo / "models"), 1),
            "request_cache": round(size_mib(work / f"cache-{rows}"), 1),
            "dvc_cache": round(size_mib(repo / ".dvc" / "cache"), 1),
            "generated.jsonl": round(size_mib(repo / "data/synthetic/generated.jsonl"), 1),
        },
    }


def table(results: list[dict]) -> str:
    stages = sorted({s["stage"].rsplit(".", 1)[-1] for r in results for s in r["stages"]})
    lines = [
        "| stage | " + " | ".join(f"{r['rows']:,} rows: wall s / s per 1k rows / peak RSS MiB" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for stage in stages:
        cells = []
        for r in results:
            runs = [s for s in r["stages"] if s["stage"].rsplit(".", 1)[-1] == stage]
            wall, rss = sum(s["wall_s"] for s in runs), max(s["peak_rss_mib"] for s in runs)
            cells.append(f"{wall:.1f} / {1000 * wall / r['rows']:.2f} / {rss:.0f} ({len(runs)} runs)")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for key in ("repro_s", "status_s", "noop_repro_s"):
        lines.append(f"| **{key}** | " + " | ".join(str(r[key]) for r in results) + " |")
    lines.append(
        "| requests/s | "
        + " | ".join(", ".join(f"{k} {v}" for k, v in r["requests_per_s"].items()) for r in results)
        + " |"
    )
    lines.append(
        "| sizes MiB | " + " | ".join(", ".join(f"{k} {v}" for k, v in r["sizes_mib"].items()) for r in results) + " |"
    )
    return "\n".join(lines)


def per_stage(result: dict) -> dict[str, dict]:
    """Wall and CPU summed over a stage's runs, peak RSS the largest run's."""
    out: dict[str, dict] = {}
    for s in result["stages"]:
        a = out.setdefault(s["stage"].rsplit(".", 1)[-1], {"wall_s": 0.0, "cpu_s": 0.0, "rss_mib": 0.0, "runs": 0})
        a["wall_s"] += s["wall_s"]
        a["cpu_s"] += s["cpu_s"]
        a["rss_mib"] = max(a["rss_mib"], s["peak_rss_mib"])
        a["runs"] += 1
    return out


def marginal_table(small: dict, large: dict) -> str:
    """Per stage, from the smaller size to the larger: seconds per 1k rows at each, the marginal
    milliseconds per added row, and the peak RSS growth per added row."""
    a, b, n = per_stage(small), per_stage(large), large["rows"] - small["rows"]
    k1, k2 = f"{small['rows'] / 1000:g}k", f"{large['rows'] / 1000:g}k"
    lines = [
        f"| stage | wall s {k1} | wall s {k2} | s per 1k rows {k1} | s per 1k rows {k2} | marginal ms/row "
        f"({k1}→{k2}) | peak RSS MiB {k1} | peak RSS MiB {k2} | RSS KiB/row ({k1}→{k2}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in sorted(b, key=lambda st: -b[st]["wall_s"]):
        x, y = a.get(stage), b[stage]
        if x is None:
            continue
        lines.append(
            f"| {stage} | {x['wall_s']:.1f} | {y['wall_s']:.1f} | {1000 * x['wall_s'] / small['rows']:.2f} | "
            f"{1000 * y['wall_s'] / large['rows']:.2f} | {1000 * (y['wall_s'] - x['wall_s']) / n:.2f} | "
            f"{x['rss_mib']:.0f} | {y['rss_mib']:.0f} | {1024 * (y['rss_mib'] - x['rss_mib']) / n:.1f} |"
        )
    lines.append(
        f"| **whole `dvc repro`** | {small['repro_s']} | {large['repro_s']} | "
        f"{1000 * small['repro_s'] / small['rows']:.2f} | {1000 * large['repro_s'] / large['rows']:.2f} | "
        f"{1000 * (large['repro_s'] - small['repro_s']) / n:.2f} | | | |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, action="append", help="synthetic rows (repeat for several runs)")
    ap.add_argument("--chat-latency", type=float, default=0.15)
    ap.add_argument("--completion-latency", type=float, default=0.3)
    ap.add_argument(
        "--mirror",
        type=Path,
        default=Path(os.environ.get("SYNTHLLM_FARSTAIL_MIRROR", ROOT.parent / "shared/data/farstail")),
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, help="keep the run's repos and caches here (default: a temporary folder)")
    ap.add_argument("--tables", type=Path, help="only print the tables of a results .json written before")
    args = ap.parse_args()
    if args.tables:
        results = json.loads(args.tables.read_text())
        print(table(results))
        for small, large in zip(results, results[1:]):
            print("\n" + marginal_table(small, large))
        return
    if args.serve:
        serve(args.serve, {"chat": args.chat_latency, "completions": args.completion_latency})
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="synthllm-dry-run-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            or None
        )
        for rows in args.rows or [20000]:
            results.append({"commit": commit, **dry_run(rows, work, args.mirror)})
            print(json.dumps(results[-1], indent=1)[:2000], flush=True)
            # written after every size: a later size that fails keeps the earlier ones
            (args.out / "paper_scale_dry_run.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    for small, large in zip(results, results[1:]):
        print("\n" + marginal_table(small, large))


if __name__ == "__main__":
    main()
