"""OpenAIBackend through run_requests against a real local HTTP server (tests/fake_openai.py)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import DECIDED, OTHER, FakeOpenAI, cached_results, label_for

from synthllm.annotation import answer_format, label_schema, parse_result
from synthllm.backends import Request, RequestCache, make_backend, run_requests
from synthllm.backends.batch_api import BatchAPIBackend, queued_tokens
from synthllm.backends.openai_http import OpenAIBackend
from synthllm.backends.openai_wire import token_bound
from synthllm.errors import BackendError, BudgetExceeded, UnansweredRequests
from synthllm.params import NLI_LABELS, AnnotatorParams, OpenAIBackendParams, PriceParams
from synthllm.prompts import load_annotate_prompt

HERE = Path(__file__).resolve().parent  # the driver subprocess imports chat_requests from here
ROOT = HERE.parents[1]
PROMPT = load_annotate_prompt(ROOT / "prompts", "fa/nli/annotate")
SCHEMA = label_schema(NLI_LABELS, "nli")
CHAT = answer_format(
    AnnotatorParams(kind="llm", method="instruct", backend=OpenAIBackendParams(model="m")), PROMPT, NLI_LABELS, "nli"
)
PLANTED = "sk-test-PLANTED-5f1c2e9a7b"
# the fake's logprobs at the deciding token: chosen -0.1, each other label -3.0 (and junk, left out)
FAKE_CONFIDENCE = math.exp(DECIDED) / (math.exp(DECIDED) + 2 * math.exp(OTHER))


def chat_requests(n: int) -> list[Request]:
    return [
        Request(
            messages=PROMPT.render_chat(f"متن شماره {i} درباره هوا است.", f"جمله {i}"),
            json_schema=SCHEMA,
            max_new_tokens=16,
        )
        for i in range(n)
    ]


def label_of(result) -> str | None:
    return parse_result(result, CHAT).label


def expected(request: Request) -> str:
    return label_for(request.messages[-1]["content"])


def params(server: FakeOpenAI, **overrides) -> OpenAIBackendParams:
    base = dict(
        model="fake-model",
        base_urls=[server.url],
        concurrency=4,
        timeout_s=0.5,
        max_retries=3,
        retry_backoff_s=0.01,
        batch_poll_s=0.05,
    )
    return OpenAIBackendParams(**{**base, **overrides})


def test_every_row_answered_and_cached_rows_never_resent(fake_openai, tmp_path):
    backend = OpenAIBackend(params(fake_openai))
    requests = chat_requests(20) + chat_requests(5)  # 5 duplicates: sent once, shared
    cache = RequestCache(tmp_path / "cache.sqlite")
    results, stats = run_requests(backend, requests, cache, progress=False, cost=backend.cost)
    assert [label_of(r) for r in results] == [expected(q) for q in requests]
    assert stats.sent == 20 and stats.failures == 0 and stats.completion_tokens > 0
    answer = parse_result(results[0], CHAT)  # the label is split over two tokens, in a JSON string
    assert answer.source == "answer_token_logprobs" and answer.labels_seen == 3
    assert answer.confidence == pytest.approx(FAKE_CONFIDENCE)
    again, stats2 = run_requests(backend, requests, cache, progress=False)
    assert stats2.sent == 0 and stats2.cache_hits == 25 and again == results
    assert sum(fake_openai.received.values()) == 20 and set(fake_openai.completed.values()) == {1}


def test_retryable_faults_recover_within_max_retries(fake_openai):
    fake_openai.hang_s = 1.0  # past the 0.5 s timeout
    for kind in ("429", "429", "500", "503", "drop", "malformed", "hang"):
        fake_openai.fail(kind)
    backend = OpenAIBackend(params(fake_openai))
    requests = chat_requests(12)
    started = time.perf_counter()
    results, stats = run_requests(backend, requests, progress=False)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [label_of(r) for r in results] == [expected(q) for q in requests]
    assert sum(fake_openai.received.values()) == 12 + 7 and set(fake_openai.completed.values()) == {1}
    assert time.perf_counter() - started >= 0.2  # the 429s' Retry-After: 0.2 was honoured


def test_persistent_5xx_gives_up_after_exactly_max_retries(fake_openai):
    requests = chat_requests(6)
    fake_openai.fail("503", times=None, match="جمله 3")
    results, stats = run_requests(
        OpenAIBackend(params(fake_openai, max_retries=2)), requests, max_unanswered=1.0, progress=False
    )
    assert results[3].error == "http 503: injected 503 (after 3 attempts)" and results[3].retryable
    assert sum(r.ok for r in results) == 5 and stats.failure_reasons == {"http 503": 1}
    assert sum(fake_openai.received.values()) == 5 + 3  # SDK retries are off: counts are exact


def test_bad_request_fails_only_its_row_and_is_not_retried(fake_openai, tmp_path):
    requests = chat_requests(8)
    fake_openai.fail("400", times=None, match="جمله 5")
    cache = RequestCache(tmp_path / "cache.sqlite")
    results, _ = run_requests(OpenAIBackend(params(fake_openai)), requests, cache, max_unanswered=1.0, progress=False)
    assert results[5].error == "http 400: injected bad request" and not results[5].retryable
    assert all(r.ok for i, r in enumerate(results) if i != 5)
    assert sum(fake_openai.received.values()) == 8 and len(cache) == 7  # errors are not cached


def test_length_empty_and_out_of_set_answers_are_never_guessed(fake_openai, tmp_path):
    requests = chat_requests(6)
    for kind, row in (("length", 1), ("empty", 2), ("out_of_set", 3)):
        fake_openai.fail(kind, match=f"جمله {row}")
    cache = RequestCache(tmp_path / "cache.sqlite")
    backend = OpenAIBackend(params(fake_openai))
    results, stats = run_requests(backend, requests, cache, progress=False)
    assert results[1].error == "finish_reason=length" and results[1].finish_reason == "length"
    assert results[2].error == "empty answer"
    assert results[3].ok and label_of(results[3]) is None  # kept as text; the annotator rejects it
    assert "schema_violation" in parse_result(results[3], CHAT).reason
    assert stats.failures == 2 and results[1].usage.completion_tokens > 0  # billed tokens still count
    # answers that came back are paid for and cached, usable or not: a re-run re-reads them
    rerun, stats2 = run_requests(backend, requests, cache, progress=False)
    assert stats2.sent == 0 and [r.error for r in rerun] == [r.error for r in results]


def test_structured_output_rejected_falls_back_to_plain_once(fake_openai):
    fake_openai.accepts_response_format = False
    requests = chat_requests(12)
    results, _ = run_requests(OpenAIBackend(params(fake_openai, concurrency=1)), requests, progress=False)
    assert [r.text for r in results] == [expected(q) for q in requests]  # bare label words
    assert not any(r.structured for r in results)  # the answers say they were asked without the schema
    assert [label_of(r) for r in results] == [expected(q) for q in requests]  # read as plain answers
    assert sum(fake_openai.received.values()) == 13  # one rejected request, then remembered


def test_completions_endpoint_and_replicas_round_robin(fake_openai):
    second = FakeOpenAI().start()
    try:
        backend = OpenAIBackend(params(fake_openai, endpoint="completions", base_urls=[second.url, fake_openai.url]))
        requests = [
            Request(prompt="متن: هوا آفتابی است.\nجمله:", temperature=0.8, seed=i, stop=("\n",)) for i in range(10)
        ]
        results, stats = run_requests(backend, requests, progress=False)
        assert all(r.ok and r.text.endswith(".") for r in results) and stats.completion_tokens > 0
        assert fake_openai.received["POST /v1/completions"] == second.received["POST /v1/completions"] == 5
        assert fake_openai.url not in backend.identity and "fake-model" in backend.identity
        with pytest.raises(BackendError, match="cannot serve"):
            run_requests(backend, chat_requests(1), progress=False)
    finally:
        second.stop()


def test_concurrency_is_bounded(fake_openai):
    fake_openai.latency_s = 0.05
    run_requests(OpenAIBackend(params(fake_openai, concurrency=3)), chat_requests(15), progress=False)
    assert fake_openai.max_in_flight == 3


DRIVER = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], str(Path(sys.argv[3]).parent)]  # this folder, and tests/ for fake_openai
from test_openai_backend_http import chat_requests
from synthllm.backends import RequestCache, run_requests
from synthllm.backends import make_backend
from synthllm.params import OpenAIBackendParams
backend = make_backend(OpenAIBackendParams.model_validate_json(sys.argv[1]), state_dir=Path(sys.argv[2]))
n = int(sys.argv[4]) if len(sys.argv) > 4 else 60
run_requests(backend, chat_requests(n), RequestCache(Path(sys.argv[2]) / "cache.sqlite"), progress=False)
"""


def _spawn(p: OpenAIBackendParams, state_dir: Path, n: int = 60) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENAI_API_KEY": PLANTED}
    with (state_dir / "driver.log").open("w") as log:  # a file, not a pipe: a full pipe would block it
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, p.model_dump_json(), str(state_dir), str(HERE), str(n)],
            env=env,
            stdout=log,
            stderr=log,
        )


def _wait_for(condition, proc: subprocess.Popen, log: Path, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert proc.poll() is None, f"driver exited early: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the driver"
        time.sleep(0.02)


def test_kill_9_mid_run_then_rerun_matches_uninterrupted_run(fake_openai, tmp_path):
    fake_openai.latency_s = 0.05
    p = params(fake_openai)
    reference, _ = run_requests(OpenAIBackend(p), chat_requests(60), progress=False)
    fake_openai.reset_counts()
    proc = _spawn(p, tmp_path)
    _wait_for(lambda: cached_results(tmp_path / "cache.sqlite") >= 15, proc, tmp_path / "driver.log")
    # Hold new answers so that the kill lands while requests are in flight, not in the few
    # microseconds between an answer's arrival and its commit (a window any client has).
    fake_openai.freeze()
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = cached_results(tmp_path / "cache.sqlite")
    assert 15 <= done_at_kill < 60 and fake_openai.delivered(done_at_kill) == done_at_kill
    fake_openai.thaw()  # held answers now find their client gone and are dropped
    results, stats = run_requests(
        OpenAIBackend(p), chat_requests(60), RequestCache(tmp_path / "cache.sqlite"), progress=False
    )
    assert results == reference and stats.cache_hits == done_at_kill and stats.sent == 60 - done_at_kill
    assert set(fake_openai.completed.values()) == {1}  # no completed request was sent twice


def test_killed_batch_run_reattaches_to_its_batch(fake_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    p = params(fake_openai, use_batch_api=True, price=PriceParams(input_per_mtok=1.0, output_per_mtok=2.0))
    fake_openai.freeze()  # the batch stays in progress until thawed
    proc = _spawn(p, tmp_path)
    _wait_for(lambda: fake_openai.batches and list(tmp_path.glob("batch-*.json")), proc, tmp_path / "driver.log")
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake_openai.thaw()
    backend = BatchAPIBackend(p, state_dir=tmp_path)
    results, stats = run_requests(
        backend, chat_requests(60), RequestCache(tmp_path / "cache.sqlite"), progress=False, cost=backend.cost
    )
    assert [label_of(r) for r in results] == [expected(q) for q in chat_requests(60)]
    assert fake_openai.received["POST /v1/batches"] == 1 and list(fake_openai.batches) == ["batch_0"]
    assert not list(tmp_path.glob("batch-*.json"))  # state removed once every answer is cached
    full = (stats.prompt_tokens * 1.0 + stats.completion_tokens * 2.0) / 1e6
    assert stats.cost_usd == pytest.approx(full * 0.5)  # the batch discount


def test_batch_api_shards_within_limits_and_reattaches_to_every_submitted_shard(fake_openai, tmp_path):
    """30 requests, at most 7 per batch: 5 batches. The enqueued-token limit admits two batches at a
    time; a kill while two are in flight, then a re-run: both are re-attached, the other three are
    submitted, and the answers equal an unsharded run's."""
    fake_openai.batch_polls = 1
    requests = chat_requests(30)
    reference, _ = run_requests(
        BatchAPIBackend(params(fake_openai, use_batch_api=True), state_dir=tmp_path / "unsharded"),
        requests,
        progress=False,
    )
    assert fake_openai.received["POST /v1/batches"] == 1
    fake_openai.reset_counts()
    two = sum(queued_tokens(r) for r in requests[:14])
    p = params(fake_openai, use_batch_api=True, batch_max_requests=7, batch_max_enqueued_tokens=two, batch_poll_s=0.05)
    state = tmp_path / "sharded"
    state.mkdir()
    fake_openai.freeze()  # batches stay in progress
    proc = _spawn(p, state, n=30)
    _wait_for(lambda: len(list(state.glob("batch-*.json"))) == 2, proc, state / "driver.log")
    time.sleep(0.5)  # the token limit holds the third shard back
    assert fake_openai.received["POST /v1/batches"] == 2 and len(list(state.glob("batch-*.json"))) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake_openai.thaw()
    results, _ = run_requests(
        BatchAPIBackend(p, state_dir=state), requests, RequestCache(state / "cache.sqlite"), progress=False
    )
    assert fake_openai.received["POST /v1/batches"] == 5  # 2 before the kill, 3 after: none twice
    sizes = sorted(fake_openai.files[b["input_file_id"]].count(b"\n") for b in list(fake_openai.batches.values())[-5:])
    assert sizes == [2, 7, 7, 7, 7]
    assert [r.text for r in results] == [r.text for r in reference] and all(r.ok for r in results)
    assert not list(state.glob("batch-*.json"))


def test_batch_resubmits_only_failed_items(fake_openai, tmp_path):
    fake_openai.batch_polls = 1
    fake_openai.fail("500", match="جمله 4", endpoint="batch_line")
    backend = BatchAPIBackend(params(fake_openai, use_batch_api=True), state_dir=tmp_path)
    results, _ = run_requests(backend, chat_requests(10), progress=False)
    assert all(r.ok for r in results) and label_of(results[4]) == expected(chat_requests(10)[4])
    second = fake_openai.batches["batch_1"]
    assert fake_openai.files[second["input_file_id"]].count(b"\n") == 1 and len(fake_openai.batches) == 2


def test_a_cancelled_batchs_unrun_lines_are_not_resubmitted_and_count_as_unanswered(fake_openai, tmp_path):
    """Issue 14 (defect 10): error lines with response null (a cancelled batch) were resubmitted."""
    fake_openai.batch_polls = 1
    fake_openai.fail("cancel", times=None, match="جمله 4", endpoint="batch_line")
    backend = BatchAPIBackend(params(fake_openai, use_batch_api=True), state_dir=tmp_path)
    results, stats = run_requests(backend, chat_requests(10), max_unanswered=1.0, progress=False)
    assert len(fake_openai.batches) == 1  # nothing resubmitted after the cancel
    assert results[4].error.startswith("http batch_cancelled") and sum(r.ok for r in results) == 9
    assert stats.unanswered == 1 and stats.failures == 1
    with pytest.raises(UnansweredRequests, match="1 of 10 requests got no answer"):
        run_requests(
            BatchAPIBackend(params(fake_openai, use_batch_api=True), state_dir=tmp_path),
            chat_requests(10),
            progress=False,
        )


def test_budget_cap_stops_before_crossing(fake_openai, tmp_path):
    backend = OpenAIBackend(params(fake_openai, price=PriceParams(input_per_mtok=1000.0, output_per_mtok=4000.0)))
    requests = chat_requests(30)
    budget = 6.5 * backend.cost_bound(requests[0])
    cache = RequestCache(tmp_path / "cache.sqlite")
    with pytest.raises(BudgetExceeded, match="raise budget_usd"):
        run_requests(
            backend,
            requests,
            cache,
            progress=False,
            cost=backend.cost,
            budget_usd=budget,
            cost_bound=backend.cost_bound,
        )
    done = cache.get_many([q.cache_key(backend.identity) for q in requests])
    assert 6 <= len(done) < 30 and cache.spent("requests") <= budget
    assert fake_openai.delivered(len(done)) == len(done)
    _, stats = run_requests(backend, requests, cache, progress=False)
    assert stats.cache_hits == len(done) and stats.sent == 30 - len(done)


def test_budget_caps_the_total_of_every_run_not_each_run(fake_openai, tmp_path):
    """Two runs whose costs each fit under the cap but together do not: the second stops at the cap
    of the total, because the ledger beside the cache remembers what the first spent."""
    backend = OpenAIBackend(params(fake_openai, price=PriceParams(input_per_mtok=1000.0, output_per_mtok=4000.0)))
    first, second = chat_requests(10), chat_requests(20)[10:]
    cache = RequestCache(tmp_path / "cache.sqlite")
    _, s1 = run_requests(backend, first, cache, progress=False, desc="annotate[x]", cost=backend.cost)
    budget = 1.5 * s1.cost_usd  # the second run alone (same size) would fit; the total cannot
    with pytest.raises(BudgetExceeded, match=r"spent on annotate\[x\] in all stages and runs so far") as err:
        run_requests(
            backend,
            second,
            cache,
            progress=False,
            desc="annotate[x]",
            cost=backend.cost,
            budget_usd=budget,
            cost_bound=backend.cost_bound,
        )
    assert "raise budget_usd" in str(err.value)
    assert s1.cost_usd < cache.spent("annotate[x]") <= budget  # the second run stopped at the cap
    cached_second = len(cache.get_many([q.cache_key(backend.identity) for q in second]))
    assert 1 <= cached_second < 10 and fake_openai.delivered(10 + cached_second) - 10 == cached_second
    assert cache.spent("annotate[y]") == 0.0  # the ledger is per annotator (scope)


def test_one_ledger_per_served_model_across_stages(fake_openai, tmp_path):
    """Issue 14 (defect 5): spend went under annotate[<name>] in one stage and cascade[<name>] in
    another, so a cascade's expensive annotator got a fresh budget_usd per stage."""
    price = PriceParams(input_per_mtok=1000.0, output_per_mtok=4000.0)
    probe = OpenAIBackend(params(fake_openai, price=price))
    cache = RequestCache(tmp_path / "cache.sqlite")
    _, first = run_requests(probe, chat_requests(10), cache, progress=False, desc="annotate[gpt]", **probe.accounting())
    budget = 1.5 * first.cost_usd  # the cascade's 10 requests alone would fit; with annotate's they cannot
    capped = OpenAIBackend(params(fake_openai, price=price, budget_usd=budget))
    assert capped.ledger == probe.ledger == "served:fake-model"
    with pytest.raises(BudgetExceeded, match="spent on served:fake-model"):
        run_requests(capped, chat_requests(20)[10:], cache, progress=False, desc="cascade[casc]", **capped.accounting())
    assert first.cost_usd < cache.spent("served:fake-model") <= budget
    assert cache.spent("annotate[gpt]") == cache.spent("cascade[casc]") == 0.0


def test_replicas_share_answers_while_answer_shaping_settings_do_not(fake_openai, tmp_path):
    cache = RequestCache(tmp_path / "cache.sqlite")
    requests = chat_requests(6)
    _, s1 = run_requests(OpenAIBackend(params(fake_openai)), requests, cache, progress=False)
    second = FakeOpenAI().start()
    try:  # a new replica of the same served model: nothing is sent again
        _, s2 = run_requests(
            OpenAIBackend(params(fake_openai, base_urls=[fake_openai.url, second.url])), requests, cache, progress=False
        )
    finally:
        second.stop()
    assert (s1.sent, s2.sent, s2.cache_hits) == (6, 0, 6)
    for change in (
        {"structured_output": False},
        {"logprobs": False},
        {"top_logprobs": 5},
        {"served_identity": "other weights"},
    ):
        _, s = run_requests(OpenAIBackend(params(fake_openai, **change)), requests, cache, progress=False)
        assert s.sent == 6, change


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("maybe", "not_json"),
        ("prose", "not_json"),
        ("bare", "not_json"),
        ("injection", "not_json"),
        ("extra_key", "schema_violation"),
        ("json_maybe", "schema_violation"),
        ("out_of_set", "schema_violation"),
    ],
)
def test_answers_outside_the_requested_form_fail_with_their_reason(fake_openai, fault, reason):
    fake_openai.fail(fault, times=None, match="جمله 1")
    requests = chat_requests(3)
    results, _ = run_requests(OpenAIBackend(params(fake_openai)), requests, progress=False)
    answers = [parse_result(r, CHAT) for r in results]
    assert answers[1].label is None and answers[1].reason.startswith(reason), answers[1]
    assert [a.label for a in answers[::2]] == [expected(q) for q in requests[::2]]


@pytest.mark.parametrize(
    "fault, ok", [("maybe", False), ("prose", False), ("injection", False), ("extra_key", False), ("bare", True)]
)
def test_plain_chat_answers_are_exact_label_words(fake_openai, fault, ok):
    """Without structured output a bare label word is the expected form; anything else fails."""
    fake_openai.fail(fault, times=None, match="جمله 1")
    plain = params(fake_openai, structured_output=False)
    (result,), _ = run_requests(OpenAIBackend(plain), chat_requests(2)[1:], progress=False)
    answer = parse_result(result, CHAT)
    assert (answer.label is not None) == ok, answer
    if not ok:
        assert answer.reason.startswith("not_a_label_word")


def test_label_word_scoring_over_completions(fake_openai):
    prompt_fmt = answer_format(
        AnnotatorParams(kind="llm", method="logprob", backend=OpenAIBackendParams(model="m", endpoint="completions")),
        PROMPT,
        NLI_LABELS,
        "nli",
    )
    requests = [Request(prompt=f"متن {i}\nپاسخ:", choices=("درست", "غلط", "شاید")) for i in range(4)]
    backend = OpenAIBackend(params(fake_openai, endpoint="completions"))
    results, stats = run_requests(backend, requests, progress=False)
    assert stats.sent == 4 and all(r.ok for r in results)
    for request, result in zip(requests, results):
        answer = parse_result(result, prompt_fmt)  # legacy-format top_logprobs, leading space
        assert answer.label == label_for(request.prompt) and answer.source == "first_token_logprobs"
        assert answer.confidence == pytest.approx(FAKE_CONFIDENCE) and answer.labels_seen == 3
    body = backend.body(requests[0])
    assert body["max_tokens"] == 1 and body["logprobs"] == 20 and body["temperature"] == 0.0


def test_planted_key_appears_nowhere(fake_openai, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    for name in ("", "openai", "httpx2", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    fake_openai.fail("401", match="جمله 2")  # the server echoes the refused key, as OpenAI does
    fake_openai.fail("429")
    backend = OpenAIBackend(params(fake_openai))
    cache = RequestCache(tmp_path / "cache.sqlite")
    results, stats = run_requests(backend, chat_requests(6), cache, max_unanswered=1.0, progress=True)
    cache.close()
    assert f"Bearer {PLANTED}" in fake_openai.auth_seen  # the key was really used
    assert results[2].error == "http 401: Incorrect API key provided: ***"
    stored = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    out = capsys.readouterr()
    for place in (
        stored.decode("utf-8", "replace"),
        repr(results),
        repr(stats),
        caplog.text,
        out.out,
        out.err,
        backend.identity,
    ):
        assert PLANTED not in place


def test_make_backend_picks_the_batch_api_backend_for_use_batch_api(fake_openai, tmp_path):
    batch = make_backend(params(fake_openai, use_batch_api=True), state_dir=tmp_path)
    online = make_backend(params(fake_openai), state_dir=tmp_path)
    assert type(batch) is BatchAPIBackend and type(online) is OpenAIBackend
    assert batch.identity == online.identity  # one cache: either transport's answers serve the other
    assert batch.state_dir == tmp_path and batch.kinds == online.kinds == {"chat"}


def test_budget_cap_and_batch_queue_limit_bound_a_request_alike(fake_openai):
    """One worst-case token bound (prompt estimate + 4 per message, full output cap) behind both
    the budget cap's cost_bound and the Batch API's enqueued-token count."""
    request = chat_requests(1)[0]
    bound = token_bound(request)
    assert bound.prompt_tokens > 4 * len(request.messages) and bound.completion_tokens == request.max_new_tokens
    dollar_a_token = PriceParams(input_per_mtok=1e6, output_per_mtok=1e6)
    online = OpenAIBackend(params(fake_openai, price=dollar_a_token))
    assert online.cost_bound(request) == queued_tokens(request) == bound.prompt_tokens + bound.completion_tokens
    price = PriceParams(input_per_mtok=3.0, output_per_mtok=7.0)
    batch = BatchAPIBackend(params(fake_openai, use_batch_api=True, price=price), state_dir=Path("unused"))
    assert batch.cost_bound(request) == price.usd(bound.prompt_tokens, bound.completion_tokens, batch=True)
    score = Request(prompt="متن", choices=("a", "b"), max_new_tokens=16)
    assert token_bound(score).completion_tokens == 1 and queued_tokens(score) == token_bound(score).prompt_tokens + 1
