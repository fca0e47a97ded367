"""Throughput and client CPU per request of OpenAIBackend (through run_requests) and of peer clients,
against a local OpenAI-protocol server with a fixed latency.

Each run gets a fresh server in its own process: ``benchmarks/load_server.py`` (asyncio, canned
answers; the default) or ``tests/fake_openai.py`` (``--server fake``: the stdlib threaded server
the tests use, which tops out near 260 req/s on 2 cores). With C requests in flight the ceiling is
C / latency requests per second. A run is ``rounds x C`` chat requests (max 16 output tokens), all
distinct; every client answers the same workload at every C, and the order of the clients rotates
from one C (and repeat) to the next so that drift on a shared machine hits all of them alike.

Per run the script prints requests/s, their ratio to the ceiling, the client's CPU time per request
(user + system from ``resource.getrusage`` of the client's own process, taken just before and after
the run call, so interpreter start-up and imports are not counted) and the server's CPU seconds
(which include the warm-up). Before each timed run the client answers 16 untimed warm-up requests
in the same process (first-call costs such as lazy imports and validator builds stay out of the
numbers; peers benefit most, since each of their runs is a fresh process).

Clients and how each is configured:

* ``synthllm``: ``OpenAIBackend`` with ``concurrency=C``, ``max_retries=0``, no structured output,
  no logprobs, through ``run_requests`` with an in-memory cache, in this process.
* ``curator`` (``--curator-python``, bespokelabs-curator 0.1.31 in its own venv):
  ``curator.LLM(model_name="bench-model", backend="openai", generation_params={"max_tokens": 16},
  backend_params={base_url, api_key="EMPTY", max_concurrent_requests=C, max_requests_per_minute=10**7,
  max_tokens_per_minute=10**9, max_retries=0, require_all_responses=False})`` called on the list of
  prompts. Offline: telemetry off (``TELEMETRY_ENABLED=false``), its response cache off
  (``CURATOR_DISABLE_CACHE=1``, cache dir a temporary folder), no rich display, litellm's local cost
  map (``LITELLM_LOCAL_MODEL_COST_MAP=True``), and tiktoken's ``cl100k_base`` (downloaded on first
  use) replaced by a byte-level stand-in encoding: the counts only feed curator's token rate limiter,
  whose limit is set out of reach here.
* ``distilabel`` (``--distilabel-python``, distilabel 1.5.3 with its ``openai`` extra in its own
  venv): ``OpenAILLM(model="bench-model", base_url=..., api_key="EMPTY", max_retries=0, timeout=120)``
  (the SDK's own default HTTP client), loaded once, then ``generate_outputs`` on batches of C
  inputs, ``max_new_tokens=16``: distilabel's async LLMs gather one batch at a time, and a pipeline
  step with ``input_batch_size=C`` does exactly this. Offline: nothing to handle (this path sends
  no telemetry and fetches nothing); the SDK's default pool keeps 100 idle connections.

Peers live in throw-away venvs, never in the project's dependencies::

    python3.11 -m venv /work/peers/curator && /work/peers/curator/bin/pip install bespokelabs-curator==0.1.31
    python3.11 -m venv /work/peers/distilabel && /work/peers/distilabel/bin/pip install \
        "distilabel[openai]==1.5.3" requests   # distilabel imports requests without declaring it

    python benchmarks/http_throughput.py --latency 0.2 --concurrency 16,64,128,256,512 --rounds 10 \\
        --curator-python /work/peers/curator/bin/python --distilabel-python /work/peers/distilabel/bin/python
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthllm.backends import Request, run_requests  # noqa: E402
from synthllm.backends.openai_http import OpenAIBackend  # noqa: E402
from synthllm.params import OpenAIBackendParams  # noqa: E402

WARMUP = 16
PROMPT = "{tag} {i}: متن: هوا آفتابی است. Label:"

# Shared by the peer programs: CPU of this process (and of any children it waited for).
PEER_HEAD = r"""
import json, os, resource, sys, time, tempfile
def cpu_s():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
url, n, c, warmup, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def prompts(tag, k):
    return [prompt.format(tag=tag, i=i) for i in range(k)]
"""

CURATOR = (
    PEER_HEAD
    + r"""
os.environ.update(TELEMETRY_ENABLED="false", CURATOR_DISABLE_CACHE="1", CURATOR_DISABLE_RICH_DISPLAY="1",
                  LITELLM_LOCAL_MODEL_COST_MAP="True", CURATOR_CACHE_DIR=tempfile.mkdtemp())
import tiktoken
stand_in = tiktoken.Encoding(name="bytes", pat_str=r"\S+|\s+", special_tokens={},
                             mergeable_ranks={bytes([i]): i for i in range(256)})
tiktoken.get_encoding = lambda name: stand_in  # cl100k_base cannot be downloaded offline
from bespokelabs import curator
llm = curator.LLM(model_name="bench-model", backend="openai", generation_params={"max_tokens": 16},
                  backend_params={"base_url": url, "api_key": "EMPTY", "max_requests_per_minute": 10**7,
                                  "max_tokens_per_minute": 10**9, "max_concurrent_requests": c, "max_retries": 0,
                                  "require_all_responses": False})
llm(prompts(f"curator-warmup {c}", warmup))
cpu0, started = cpu_s(), time.perf_counter()
out = llm(prompts(f"curator {c}", n))
seconds, cpu = time.perf_counter() - started, cpu_s() - cpu0
answered = sum(1 for r in out.dataset if r.get("response"))
print("PEER_RESULT " + json.dumps({"seconds": seconds, "answered": answered, "cpu_s": cpu}))
"""
)

DISTILABEL = (
    PEER_HEAD
    + r"""
from distilabel.models.llms import OpenAILLM
llm = OpenAILLM(model="bench-model", base_url=url, api_key="EMPTY", max_retries=0, timeout=120)
llm.load()
def run(tag, k):
    inputs, outputs = [[{"role": "user", "content": p}] for p in prompts(tag, k)], []
    for start in range(0, k, c):  # one batch of C in flight at a time, as a step with input_batch_size=C
        outputs += llm.generate_outputs(inputs=inputs[start:start + c], num_generations=1, max_new_tokens=16)
    return outputs
run(f"distilabel-warmup {c}", warmup)
cpu0, started = cpu_s(), time.perf_counter()
out = run(f"distilabel {c}", n)
seconds, cpu = time.perf_counter() - started, cpu_s() - cpu0
answered = sum(1 for o in out if o["generations"] and o["generations"][0])
print("PEER_RESULT " + json.dumps({"seconds": seconds, "answered": answered, "cpu_s": cpu}))
"""
)

PEERS = {"curator": CURATOR, "distilabel": DISTILABEL}


@dataclass
class Run:
    seconds: float
    answered: int
    cpu_s: float  # the client's own CPU over the run
    server_cpu_s: float | None = None


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(kind: str, latency: float) -> tuple[subprocess.Popen, str]:
    script = ROOT / ("benchmarks/load_server.py" if kind == "load" else "tests/fake_openai.py")
    server = subprocess.Popen(
        [sys.executable, str(script), "--latency", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, server.stdout.readline().strip()


def stop_server(server: subprocess.Popen) -> float | None:
    """Closes the server's stdin and returns the CPU seconds it reports (None: it reports none)."""
    server.stdin.close()
    out = server.stdout.read()
    server.wait(timeout=30)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line).get("server_cpu_s")
    return None


def requests_for(n: int, tag: str) -> list[Request]:
    return [
        Request(messages=({"role": "user", "content": PROMPT.format(tag=tag, i=i)},), max_new_tokens=16)
        for i in range(n)
    ]


def ours(url: str, n: int, concurrency: int) -> Run:
    backend = OpenAIBackend(
        OpenAIBackendParams(
            model="bench-model",
            base_urls=[url],
            concurrency=concurrency,
            max_retries=0,
            structured_output=False,
            logprobs=False,
        )
    )
    run_requests(backend, requests_for(WARMUP, f"synthllm-warmup {concurrency}"), progress=False)
    requests = requests_for(n, f"synthllm {concurrency}")
    cpu0, started = cpu_s(), time.perf_counter()
    results, _ = run_requests(backend, requests, progress=False)
    seconds, cpu = time.perf_counter() - started, cpu_s() - cpu0
    return Run(seconds, sum(r.ok for r in results), cpu)


def peer(name: str, python: str, url: str, n: int, concurrency: int) -> Run | str:
    try:
        done = subprocess.run(
            [python, "-c", PEERS[name], url, str(n), str(concurrency), str(WARMUP), PROMPT],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{name} run failed: {err}"
    for line in done.stdout.splitlines():
        if line.startswith("PEER_RESULT "):
            data = json.loads(line.removeprefix("PEER_RESULT "))
            return Run(data["seconds"], data["answered"], data["cpu_s"])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return f"{name} run failed (exit {done.returncode}): {' | '.join(tail)}"


def one_run(client: str, pythons: dict[str, str], server_kind: str, latency: float, n: int, c: int) -> Run | str:
    server, url = start_server(server_kind, latency)
    try:
        outcome = ours(url, n, c) if client == "synthllm" else peer(client, pythons[client], url, n, c)
    finally:
        server_cpu = stop_server(server)
    if isinstance(outcome, Run):
        outcome.server_cpu_s = server_cpu
    return outcome


def row(c: int, client: str, n: int, latency: float, run: Run, markdown: bool = False) -> str:
    rate, server = n / run.seconds, "n/a" if run.server_cpu_s is None else f"{run.server_cpu_s:.2f}"
    cells = (
        f"{c}",
        client,
        f"{n}",
        f"{run.answered}",
        f"{rate:.1f}",
        f"{rate / (c / latency):.2f}",
        f"{1000 * run.cpu_s / n:.3f}",
        server,
    )
    if markdown:
        return "| " + " | ".join(cells) + " |"
    return "{:>4} {:<10} {:>8} {:>8} {:>8} {:>6} {:>11} {:>10}".format(*cells)


HEADER = ("C", "client", "requests", "answered", "req/s", "ratio", "CPU ms/req", "server CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP client throughput and CPU per request")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--concurrency", default="16,64,128,256,512", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=10, help="requests per run = rounds x concurrency")
    parser.add_argument("--repeats", type=int, default=1, help="runs per client and C (the median is reported)")
    parser.add_argument(
        "--server",
        choices=("load", "fake"),
        default="load",
        help="load: benchmarks/load_server.py (asyncio); fake: tests/fake_openai.py (threads)",
    )
    parser.add_argument(
        "--clients",
        default="synthllm,curator,distilabel",
        help="which clients to run (peers without a --*-python are skipped)",
    )
    parser.add_argument("--curator-python", help="python of a venv with bespokelabs-curator installed")
    parser.add_argument("--distilabel-python", help="python of a venv with distilabel[openai] installed")
    parser.add_argument("--peer-python", help="old name of --curator-python")
    args = parser.parse_args()
    pythons = {"curator": args.curator_python or args.peer_python, "distilabel": args.distilabel_python}
    clients = [c for c in args.clients.split(",") if c == "synthllm" or pythons.get(c)]
    for skipped in sorted(set(args.clients.split(",")) - set(clients)):
        print(f"{skipped}: no --{skipped}-python given, skipped (see the module docstring)")
    concurrencies = [int(x) for x in args.concurrency.split(",")]
    print(
        f"server {args.server}, latency {args.latency:g} s, {args.rounds} rounds x C requests, "
        f"{args.repeats} repeat(s), clients rotate per C"
    )
    print("{:>4} {:<10} {:>8} {:>8} {:>8} {:>6} {:>11} {:>10}".format(*HEADER), flush=True)
    runs: dict[tuple[int, str], list[Run]] = {}
    for repeat in range(args.repeats):
        for k, c in enumerate(concurrencies):
            shift = (k + repeat) % len(clients)
            for client in clients[shift:] + clients[:shift]:
                n = args.rounds * c
                outcome = one_run(client, pythons, args.server, args.latency, n, c)
                if isinstance(outcome, str):
                    print(f"{c:>4} {client:<10} {n:>8}  {outcome}", flush=True)
                    continue
                runs.setdefault((c, client), []).append(outcome)
                print(row(c, client, n, args.latency, outcome), flush=True)
    print("\nmedian over repeats (markdown):\n")
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for c in concurrencies:
        for client in clients:
            done = runs.get((c, client))
            if done:
                mid = Run(
                    statistics.median(r.seconds for r in done),
                    min(r.answered for r in done),
                    statistics.median(r.cpu_s for r in done),
                    None if done[0].server_cpu_s is None else statistics.median(r.server_cpu_s for r in done),
                )
                print(row(c, client, args.rounds * c, args.latency, mid, markdown=True))


if __name__ == "__main__":
    main()
