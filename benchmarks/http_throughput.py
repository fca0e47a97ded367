"""Throughput of OpenAIBackend (through run_requests) against the fake OpenAI server.

The server (tests/fake_openai.py, its own process) answers every chat request after a fixed
latency, so with C requests in flight the ceiling is C / latency requests per second; the script
prints achieved requests/s and their ratio to that ceiling, per concurrency.

Peer comparison: ``--peer-python PATH`` runs the same workload through bespokelabs-curator in that
interpreter, e.g. a throw-away venv (never a project dependency)::

    python -m venv /tmp/peer-curator && /tmp/peer-curator/bin/pip install bespokelabs-curator

Curator counts tokens with tiktoken's ``cl100k_base``, whose vocabulary is downloaded on first use;
without internet the peer run substitutes a byte-level stand-in encoding (the counts only feed
curator's rate limiter, whose limits are set out of reach here). Both clients run end to end
through their public entry points, with retries and caching of results off or out of the way.

    python benchmarks/http_throughput.py --latency 0.2 --concurrency 8,32,64 [--peer-python PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthllm.backends import Request, run_requests  # noqa: E402
from synthllm.backends.openai_http import OpenAIBackend  # noqa: E402
from synthllm.params import OpenAIBackendParams  # noqa: E402

PEER = r"""
import json, os, sys, time, tempfile
os.environ.update(TELEMETRY_ENABLED="false", CURATOR_DISABLE_CACHE="1", CURATOR_DISABLE_RICH_DISPLAY="1",
                  LITELLM_LOCAL_MODEL_COST_MAP="True", CURATOR_CACHE_DIR=tempfile.mkdtemp())
import tiktoken
stand_in = tiktoken.Encoding(name="bytes", pat_str=r"\S+|\s+", special_tokens={},
                             mergeable_ranks={bytes([i]): i for i in range(256)})
tiktoken.get_encoding = lambda name: stand_in  # cl100k_base cannot be downloaded offline
from bespokelabs import curator
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = curator.LLM(model_name="bench-model", backend="openai", generation_params={"max_tokens": 16},
                  backend_params={"base_url": url, "api_key": "EMPTY", "max_requests_per_minute": 10**7,
                                  "max_tokens_per_minute": 10**9, "max_concurrent_requests": c, "max_retries": 0,
                                  "require_all_responses": False})
prompts = [f"peer {c} {i}: متن: هوا آفتابی است. Label:" for i in range(n)]
started = time.perf_counter()
out = llm(prompts)
seconds = time.perf_counter() - started
print("PEER_RESULT " + json.dumps({"seconds": seconds, "answered": len(out.dataset)}))
"""


def requests_for(n: int, tag: str) -> list[Request]:
    return [Request(messages=({"role": "user", "content": f"{tag} {i}: متن: هوا آفتابی است. Label:"},),
                    max_new_tokens=16) for i in range(n)]


def ours(url: str, n: int, concurrency: int) -> tuple[float, int]:
    backend = OpenAIBackend(OpenAIBackendParams(model="bench-model", base_urls=[url], concurrency=concurrency,
                                                max_retries=0, structured_output=False, logprobs=False))
    started = time.perf_counter()
    results, _ = run_requests(backend, requests_for(n, f"ours {concurrency}"), progress=False)
    return time.perf_counter() - started, sum(r.ok for r in results)


def peer(python: str, url: str, n: int, concurrency: int) -> tuple[float, int] | str:
    try:
        done = subprocess.run([python, "-c", PEER, url, str(n), str(concurrency)], capture_output=True,
                              text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"peer run failed: {err}"
    for line in done.stdout.splitlines():
        if line.startswith("PEER_RESULT "):
            data = json.loads(line.removeprefix("PEER_RESULT "))
            return data["seconds"], data["answered"]
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return f"peer run failed (exit {done.returncode}): {' | '.join(tail)}"


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP backend throughput against the fake server")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", default="8,32,64", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=10, help="requests per run = rounds x concurrency")
    parser.add_argument("--peer-python", help="python of a venv with bespokelabs-curator installed")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai.py"), "--latency",
                               str(args.latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        print(f"fake server {url}, latency {args.latency:g} s")
        print(f"{'client':<10} {'C':>4} {'requests':>9} {'answered':>9} {'seconds':>8} {'req/s':>8} "
              f"{'ceiling':>8} {'ratio':>6}")
        for c in (int(x) for x in args.concurrency.split(",")):
            n, ceiling = args.rounds * c, c / args.latency
            runs = [("synthllm", ours(url, n, c))]
            if args.peer_python:
                runs.append(("curator", peer(args.peer_python, url, n, c)))
            for name, outcome in runs:
                if isinstance(outcome, str):
                    print(f"{name:<10} {c:>4} {n:>9}  {outcome}")
                    continue
                seconds, answered = outcome
                print(f"{name:<10} {c:>4} {n:>9} {answered:>9} {seconds:>8.2f} {n / seconds:>8.1f} "
                      f"{ceiling:>8.1f} {n / seconds / ceiling:>6.2f}")
        if not args.peer_python:
            print("no --peer-python given: peer comparison skipped (see the module docstring)")
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
