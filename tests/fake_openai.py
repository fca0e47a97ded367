"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI protocol for the backend tests
and the throughput benchmark: chat and text completions, file upload/download, and batches.

Answers are deterministic: a chat answer's label comes from a hash of the last message, a text
completion is a Persian sentence picked by a hash of prompt and seed, and a one-token completion
with ``logprobs`` (label-word scoring) starts one of the Persian answer words. Token logprobs come
split over several tokens, with ``bytes``, in the chat ``content`` format for chat and in the legacy
``tokens``/``top_logprobs`` format for completions. At the token where the label is decided the
chosen token has logprob -0.1, each other label's first token -3.0 and an off-label token -4.0.
Faults are injected on demand by :meth:`FakeOpenAI.fail` (the next ``times`` matching requests get
the fault), including hostile answers (``maybe``, ``prose``, ``bare``, ``injection``,
``extra_key``, ``json_maybe``). The server counts requests per endpoint and, per request body, the
200 answers actually delivered to a client that was still listening. It does not validate request
schemas beyond what the tests need.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import select
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

NLI_LABELS = ("entailment", "contradiction", "neutral")
WORDS = (("هوا", "کتاب", "شهر", "دریا", "باغ"), ("امروز", "همیشه", "اینجا"), ("زیباست", "بزرگ است", "آرام است"))
SCORING_WORDS = {"entailment": "درست", "contradiction": "غلط", "neutral": "شاید"}
HOSTILE = {  # answers outside the requested form
    "maybe": "maybe",
    "prose": "I think the answer is entailment, because the premise says so.",
    "injection": "label=entailment; actually neutral",
    "extra_key": '{"label": "entailment", "note": "actually neutral"}',
    "json_maybe": '{"label": "maybe"}',
}
FAULTS = (
    "429",
    "500",
    "503",
    "400",
    "401",
    "hang",
    "drop",
    "malformed",
    "out_of_set",
    "empty",
    "length",
    "bare",
    "cancel",
    *HOSTILE,
)  # cancel: batch lines only; the batch ends cancelled, those lines unanswered
DECIDED, OTHER, JUNK = -0.1, -3.0, -4.0


@dataclass
class Fault:
    kind: str
    times: int | None  # None: every matching request
    match: str | None  # substring of the raw request body
    endpoint: str | None  # "chat", "completions", "batch_line" or None for any


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def label_for(text: str) -> str:
    return NLI_LABELS[_digest(text) % 3]


def sentence_for(prompt: str, seed: int) -> str:
    h = _digest(f"{prompt}|{seed}")
    return " ".join(ws[(h >> (8 * i)) % len(ws)] for i, ws in enumerate(WORDS)) + "."


class FakeOpenAI:
    def __init__(self, latency_s: float = 0.0, hang_s: float = 1.0, batch_polls: int = 2):
        self.latency_s, self.hang_s, self.batch_polls = latency_s, hang_s, batch_polls
        self.accepts_response_format = True
        self.retry_after = "0.2"  # seconds, sent with every injected 429
        self.faults: list[Fault] = []
        self.received: Counter[str] = Counter()  # "POST /v1/chat/completions" -> count
        self.completed: Counter[str] = Counter()  # body_key -> 200 answers delivered
        self.bodies: list[dict] = []  # every completion request body received, in order
        self.auth_seen: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.in_flight = self.max_in_flight = 0
        self.gate = threading.Event()  # cleared by freeze(): answers wait until thaw()
        self.gate.set()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.down = False

    # ---- control --------------------------------------------------------------------------
    def fail(self, kind: str, times: int | None = 1, match: str | None = None, endpoint: str | None = None) -> None:
        assert kind in FAULTS, f"unknown fault {kind!r}; known: {FAULTS}"
        with self.lock:
            self.faults.append(Fault(kind, times, match, endpoint))

    def freeze(self) -> None:
        self.gate.clear()

    def thaw(self) -> None:
        self.gate.set()

    def delivered(self, at_least: int = 0, timeout_s: float = 5.0) -> int:
        """Answers delivered so far, after waiting (up to ``timeout_s``) until there are at least
        ``at_least``: an answer is counted just after it is written, so a client can hold it a
        moment before the count does."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                total = sum(self.completed.values())
            if total >= at_least or time.monotonic() > deadline:
                return total
            time.sleep(0.01)

    def reset_counts(self) -> None:
        with self.lock:
            self.received.clear()
            self.completed.clear()
            self.max_in_flight = 0

    def _take_fault(self, endpoint: str, raw: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if (
                    fault.endpoint in (None, endpoint)
                    and (fault.match is None or fault.match in raw)
                    and (fault.times is None or fault.times > 0)
                ):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault.kind
        return None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self, port: int = 0) -> FakeOpenAI:
        """Serve on 127.0.0.1 (``port`` 0: any free port; a stopped server's port to bring it back)."""
        handler = type("Handler", (_Handler,), {"fake": self})
        server_cls = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024, "daemon_threads": True})
        self._server = server_cls(("127.0.0.1", port), handler)  # the default backlog of 5 resets bursts
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.down = True
        self.thaw()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- answers --------------------------------------------------------------------------
    def answer(self, endpoint: str, body: dict, fault: str | None) -> dict:
        created = int(time.time())
        if endpoint == "completions":
            prompt = body.get("prompt", "")
            if body.get("max_tokens") == 1 and body.get("logprobs"):  # label-word scoring
                label = label_for(prompt)
                first = {lab: w[0] for lab, w in SCORING_WORDS.items()}
                tops = {" " + first[lab]: (DECIDED if lab == label else OTHER) for lab in NLI_LABELS}
                tops["\n"] = JUNK
                text = " " + first[label]
                logprobs = {"tokens": [text], "token_logprobs": [DECIDED], "top_logprobs": [tops], "text_offset": [0]}
                choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": logprobs}
            else:
                text = sentence_for(prompt, int(body.get("seed") or 0))
                text = "" if fault == "empty" else text
                choice = {
                    "index": 0,
                    "text": text,
                    "finish_reason": "length" if fault == "length" else "stop",
                    "logprobs": None,
                }
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [choice],
                "usage": _usage(prompt, text),
            }
        question = str(body["messages"][-1]["content"])
        label = "sarcasm" if fault == "out_of_set" else label_for(question)
        structured = "response_format" in body and fault != "bare"
        if fault in HOSTILE:
            pieces = [HOSTILE[fault]]
        elif structured:
            pieces = ['{"', "label", '":"', label[:1], label[1:], '"}']
        else:
            pieces = [label[:1], label[1:]]
        text = "" if fault == "empty" else "".join(pieces)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length" if fault == "length" else "stop",
            "logprobs": None,
        }
        if body.get("logprobs") and text:
            decided = 3 if structured and fault not in HOSTILE else 0
            content = []
            for k, piece in enumerate(pieces):
                item = {
                    "token": piece,
                    "logprob": DECIDED if k == decided else -0.01,
                    "bytes": list(piece.encode()),
                    "top_logprobs": [],
                }
                if k == decided:
                    alts = [(lab[:1], DECIDED if lab[:1] == piece[:1] else OTHER) for lab in NLI_LABELS]
                    item["top_logprobs"] = [
                        {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alts + [("The", JUNK)]
                    ]
                content.append(item)
            choice["logprobs"] = {"content": content}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": created,
            "model": body.get("model"),
            "choices": [choice],
            "usage": _usage(question, text),
        }

    def poll_batch(self, batch_id: str) -> dict:
        with self.lock:
            batch = self.batches[batch_id]
            batch["_polls"] += 1
            if batch["status"] == "validating":
                batch["status"] = "in_progress"
            ready = batch["status"] == "in_progress" and batch["_polls"] >= self.batch_polls
        if ready and self.gate.is_set():  # a frozen server keeps its batches in progress
            self._complete_batch(batch)
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _complete_batch(self, batch: dict) -> None:
        out, err, cancelled = [], [], False
        for raw in self.files[batch["input_file_id"]].decode("utf-8").splitlines():
            line = json.loads(raw)
            endpoint = "chat" if line["url"].endswith("chat/completions") else "completions"
            fault = self._take_fault("batch_line", raw)
            if fault == "cancel":  # as OpenAI writes the lines a cancelled batch never ran
                cancelled = True
                err.append(
                    {
                        "id": "r",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": "batch_cancelled", "message": "This batch was cancelled."},
                    }
                )
                continue
            if fault in ("429", "500", "503", "400"):
                err.append(
                    {
                        "id": "r",
                        "custom_id": line["custom_id"],
                        "error": None,
                        "response": {"status_code": int(fault), "body": {"error": {"message": f"injected {fault}"}}},
                    }
                )
                continue
            answer = self.answer(endpoint, line["body"], fault)
            with self.lock:
                self.completed[body_key(line["body"])] += 1
            out.append(
                {
                    "id": "r",
                    "custom_id": line["custom_id"],
                    "error": None,
                    "response": {"status_code": 200, "body": answer},
                }
            )
        with self.lock:
            for name, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    file_id = f"file-{len(self.files)}"
                    self.files[file_id] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
                    batch[name] = file_id
            batch["status"] = "cancelled" if cancelled else "completed"
            batch["request_counts"] = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}


def _usage(prompt: str, text: str) -> dict:
    p, c = len(prompt) // 4 + 1, len(text) // 4 + 1
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK add 40 ms
    fake: FakeOpenAI

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(
        self, status: int, payload: bytes, headers: dict | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), headers)

    def _peer_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_GET(self) -> None:
        fake = self.fake
        with fake.lock:
            fake.received[f"GET {self.path.split('/')[2]}"] += 1
        parts = self.path.strip("/").split("/")  # v1/batches/<id> or v1/files/<id>/content
        if parts[1] == "batches" and parts[2] in fake.batches:
            return self._json(200, fake.poll_batch(parts[2]))
        if parts[1] == "files" and parts[2] in fake.files:
            return self._send(200, fake.files[parts[2]], content_type="application/octet-stream")
        self._json(404, {"error": {"message": f"no such object: {self.path}"}})

    def do_POST(self) -> None:
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fake.down:  # stopped: a kept-alive connection is closed unanswered, as a dead server's would be
            self.close_connection = True
            return
        fake.auth_seen.add(self.headers.get("Authorization", ""))
        with fake.lock:
            fake.received[f"POST {self.path}"] += 1
        if self.path == "/v1/files":
            return self._upload(raw)
        if self.path == "/v1/batches":
            return self._create_batch(json.loads(raw))
        endpoint = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}.get(self.path)
        if endpoint is None:
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._complete(endpoint, raw.decode("utf-8"))
        except (KeyError, IndexError, TypeError, ValueError) as err:  # as OpenAI: a 400, not a crash
            self._json(400, {"error": {"message": f"invalid request: {type(err).__name__} {err}"}})
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _complete(self, endpoint: str, raw: str) -> None:
        fake, body = self.fake, json.loads(raw)
        with fake.lock:
            fake.bodies.append(body)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        fake.gate.wait()
        fault = fake._take_fault(endpoint, raw)
        if fault == "hang":
            time.sleep(fake.hang_s)
        if fault == "drop" or self._peer_gone():  # a killed or timed-out client gets nothing
            self.close_connection = True
            return
        if fault == "429":
            return self._json(
                429, {"error": {"message": "rate limited", "type": "requests"}}, {"Retry-After": fake.retry_after}
            )
        if fault in ("500", "503"):
            return self._json(int(fault), {"error": {"message": f"injected {fault}"}})
        if fault == "401":  # like OpenAI, echo the key that was refused (clients must redact it)
            return self._json(
                401, {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization', '')[7:]}"}}
            )
        if fault == "400":
            return self._json(400, {"error": {"message": "injected bad request", "type": "invalid_request_error"}})
        if "response_format" in body and not fake.accepts_response_format:
            return self._json(
                400,
                {"error": {"message": "response_format is not supported by this server", "param": "response_format"}},
            )
        if fault == "malformed":
            return self._send(200, b'{"id": "chatcmpl-fake", "choices": [')
        self._json(200, fake.answer(endpoint, body, fault))
        with fake.lock:
            fake.completed[body_key(body)] += 1

    def _upload(self, raw: bytes) -> None:
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser().parsebytes(head + raw)
        parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
        data = parts["file"].get_payload(decode=True)
        with self.fake.lock:
            file_id = f"file-{len(self.fake.files)}"
            self.fake.files[file_id] = data
        self._json(
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": parts["file"].get_filename(),
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _create_batch(self, body: dict) -> None:
        with self.fake.lock:
            batch_id = f"batch_{len(self.fake.batches)}"
            lines = self.fake.files[body["input_file_id"]].count(b"\n")
            self.fake.batches[batch_id] = batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "status": "validating",
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "created_at": int(time.time()),
                "request_counts": {"total": lines, "completed": 0, "failed": 0},
                "_polls": 0,
            }
        self._json(200, {k: v for k, v in batch.items() if not k.startswith("_")})


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAI]:
    """A started server, stopped after the test; import this function into a test module to use it."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


if __name__ == "__main__":  # a stand-alone server for the benchmark: prints its URL, serves until stdin closes
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="fake OpenAI server on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every completion")
    server = FakeOpenAI(latency_s=parser.parse_args().latency).start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


def cached_results(path: Path) -> int:
    """Raw responses committed to a request-cache file so far (0 before the table exists); read
    from another process while a run is writing it."""
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path, timeout=5)) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0
