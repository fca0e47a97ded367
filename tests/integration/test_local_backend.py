"""The transformers backend on a real tiny LM, through the shared runner and its SQLite cache."""

import pytest

from synthllm.backends import RequestCache, run_requests
from synthllm.backends.base import Request
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.errors import BackendError


@pytest.fixture(scope="module")
def backend(tiny_lm):
    return TransformersBackend(tiny_lm, batch_size=4)


def _gen(n, seed0=0):
    return [
        Request(
            prompt=f"متن: جمله شماره {i} درباره شهر است.\nجمله:",
            max_new_tokens=16,
            temperature=0.9,
            top_p=0.95,
            stop=("\n",),
            seed=seed0 + i,
        )
        for i in range(n)
    ]


def test_generation_is_deterministic_and_stops_on_newline(backend):
    a, stats = run_requests(backend, _gen(6), progress=False)
    b, _ = run_requests(backend, _gen(6), progress=False)
    assert [r.text for r in a] == [r.text for r in b]
    assert stats.sent == 6 and stats.failures == 0
    assert all("\n" not in r.text for r in a)
    assert {r.finish_reason for r in a} <= {"stop", "length"}
    assert all(r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 5 for r in a)


def test_cache_answers_repeat_requests_without_sending(backend, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    first, s1 = run_requests(backend, _gen(5), cache, progress=False)
    # a re-run with two more requests sends only the two new ones
    second, s2 = run_requests(backend, _gen(7), cache, progress=False)
    assert (s1.sent, s2.sent, s2.cache_hits) == (5, 2, 5)
    assert [r.text for r in second[:5]] == [r.text for r in first]
    cache.close()
    reopened = RequestCache(tmp_path / "c.sqlite")
    assert len(reopened) == 7


def test_duplicate_requests_are_sent_once(backend):
    reqs = _gen(2) + _gen(2)
    results, stats = run_requests(backend, reqs, progress=False)
    assert stats.sent == 2 and stats.requests == 4
    assert results[0] == results[2]


def test_choice_scoring_multi_token_matches_manual_log_probability(backend):
    import torch

    prompt = "متن: امروز هوا خوب است.\nجمله: هوا خوب است.\nپاسخ:"
    (res,), _ = run_requests(backend, [Request(prompt=prompt, choices=("درست", "غلط", "شاید"))], progress=False)
    tok, model = backend.tokenizer, backend.model
    for choice, score in res.choice_logprobs.items():
        p_ids = tok(prompt)["input_ids"]
        c_ids = tok(" " + choice, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
        manual = sum(float(logp[len(p_ids) - 1 + k, t]) for k, t in enumerate(c_ids))
        assert score == pytest.approx(manual, abs=1e-3)


def test_backend_refuses_request_kinds_it_cannot_serve(backend):
    with pytest.raises(BackendError, match="cannot serve"):
        run_requests(backend, [Request(messages=({"role": "user", "content": "x"},))], progress=False)


def _varied(n):
    """Requests whose prompts differ in length (several padded lengths, batches of mixed fill)."""
    return [
        Request(
            prompt="متن: " + "جمله درباره شهر است. " * (1 + 9 * (i % 4)) + f"{i}\nجمله:",
            max_new_tokens=12,
            temperature=0.9,
            top_p=0.95,
            stop=("\n",),
            seed=100 + i,
        )
        for i in range(n)
    ]


def test_bfloat16_rows_do_not_depend_on_what_shares_their_batch(tiny_lm):
    """Issue 19: in bfloat16 a row's logits, and so its sampled text, changed with its batch's shape;
    every batch now has one shape per padded length, so a row's text and scores are the same in a
    run of one request, a short run, a reordered run and the whole run, bit for bit."""
    b = TransformersBackend(tiny_lm, dtype="bfloat16", batch_size=4)
    reqs = _varied(10)
    scores = [Request(prompt=r.prompt, choices=("درست", "غلط")) for r in reqs]
    whole = dict(b.run(reqs))
    whole_scores = dict(b.run(scores))
    for sub in ([3], [0, 5], [9, 1, 4, 2, 6, 7]):
        part = dict(b.run([reqs[i] for i in sub]))
        assert [part[k].text for k in range(len(sub))] == [whole[i].text for i in sub]
        part_scores = dict(b.run([scores[i] for i in sub]))
        assert [part_scores[k].choice_logprobs for k in range(len(sub))] == [
            whole_scores[i].choice_logprobs for i in sub
        ]
