"""A cheap OpenAI-protocol load server for client benchmarks: one process, one asyncio event loop.

``POST /v1/chat/completions`` and ``POST /v1/completions`` are answered after a fixed latency
(``--jitter`` spreads it, since a real server's answers do not arrive in lockstep) with a small
canned, valid body (``choices[0].message.content`` or ``choices[0].text``, ``finish_reason`` ``stop``,
``usage``), over HTTP/1.1 keep-alive. Each request costs the server one header scan, one timer and
one write of pre-built bytes, so at C up to 512 the client, not the server, is what a throughput run
measures (the stdlib threaded server in ``tests/fake_openai.py`` spends a thread and a JSON
round-trip per request, and tops out near 260 req/s on 2 cores).

It does not read request bodies beyond their length, validate schemas, inject faults, stream, or
speak TLS or HTTP/2; every other path gets 404. For fault behaviour use ``tests/fake_openai.py``.

    python benchmarks/load_server.py --latency 0.2

prints its URL (``http://127.0.0.1:PORT/v1``) and serves until its standard input closes; it then
prints one JSON line with the CPU seconds it spent serving (``resource.getrusage``, user + system,
from the moment it listens; start-up is not counted), the requests answered and the most requests
it held at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import sys

CHAT_PATH, COMPLETIONS_PATH = b"/v1/chat/completions", b"/v1/completions"
ANSWER = "هوا امروز آفتابی است و باد ملایمی از سمت دریا می وزد."  # ~16 tokens


def _response(body: dict, keep_alive: bool) -> bytes:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + payload


def canned(path: bytes, keep_alive: bool) -> bytes:
    usage = {"prompt_tokens": 24, "completion_tokens": 16, "total_tokens": 40}
    common = {"id": "cmpl-load", "created": 1700000000, "model": "bench-model", "usage": usage}
    if path == CHAT_PATH:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "logprobs": None,
            "finish_reason": "stop",
        }
        return _response({**common, "object": "chat.completion", "choices": [choice]}, keep_alive)
    choice = {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}
    return _response({**common, "object": "text_completion", "choices": [choice]}, keep_alive)


RESPONSES = {(p, k): canned(p, k) for p in (CHAT_PATH, COMPLETIONS_PATH) for k in (True, False)}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Stats:
    answered = in_flight = max_in_flight = 0
    cpu_at_start = 0.0


class LoadProtocol(asyncio.Protocol):
    """One connection: requests are parsed as bytes arrive and answered in order after the latency
    (pipelined requests keep their order: each answer waits for the one before it)."""

    def __init__(self, latency_s: float, jitter_s: float, stats: Stats):
        self.latency_s, self.jitter_s, self.stats = latency_s, jitter_s, stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: list[list] = []  # [answer bytes or None while waiting, close after?]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.in_flight -= sum(1 for item in self.queue if item[0] is None)
        self.transport, self.queue = None, []

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length, keep_alive = 0, True
            lines = head.split(b"\r\n")
            method, path, version = (lines[0].split(b" ") + [b"", b""])[:3]
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    keep_alive = value.strip().lower() != b"close"
            if version == b"HTTP/1.0":
                keep_alive = False
            if len(self.buffer) < end + 4 + length:
                return  # the body is still arriving
            self.buffer = self.buffer[end + 4 + length :]
            self._accept(method, path.split(b"?")[0], keep_alive)

    def _accept(self, method: bytes, path: bytes, keep_alive: bool) -> None:
        answer = RESPONSES.get((path, keep_alive)) if method == b"POST" else None
        if answer is None:
            self.queue.append([NOT_FOUND, not keep_alive])
            self._flush()
            return
        item = [None, not keep_alive]
        self.queue.append(item)
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        delay = self.latency_s + random.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else self.latency_s
        asyncio.get_running_loop().call_later(max(0.0, delay), self._ready, item, answer)

    def _ready(self, item: list, answer: bytes) -> None:
        if self.transport is None:
            return  # the client left; connection_lost already counted it out
        item[0] = answer
        self.stats.in_flight -= 1
        self.stats.answered += 1
        self._flush()

    def _flush(self) -> None:
        while self.queue and self.queue[0][0] is not None and self.transport is not None:
            answer, close = self.queue.pop(0)
            self.transport.write(answer)
            if close:
                self.transport.close()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(latency_s: float, jitter_s: float, port: int) -> Stats:
    loop, stats = asyncio.get_running_loop(), Stats()
    stats.cpu_at_start = cpu_s()  # serving only: interpreter start-up and imports are not counted
    server = await loop.create_server(lambda: LoadProtocol(latency_s, jitter_s, stats), "127.0.0.1", port, backlog=2048)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # serve until the caller closes our stdin
    server.close()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-protocol load server (fixed latency, canned answers)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="each latency is drawn uniformly from latency +- jitter (0: all alike)",
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    stats = asyncio.run(serve(args.latency, args.jitter, args.port))
    print(
        json.dumps(
            {
                "server_cpu_s": round(cpu_s() - stats.cpu_at_start, 3),
                "answered": stats.answered,
                "max_in_flight": stats.max_in_flight,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
