"""Strict reading of annotator answers, and each confidence definition computed by hand."""

import json
import math

import pytest

from synthllm.annotation import (
    AnswerFormat,
    answer_format,
    ask_until_parsed,
    build_requests,
    label_schema,
    parse_result,
)
from synthllm.backends.base import Result, TokenChoice, TokenStep
from synthllm.backends.runner import RunStats
from synthllm.params import (
    NLI_LABELS,
    AnnotatorParams,
    OpenAIBackendParams,
    TransformersBackendParams,
)
from synthllm.prompts import load_annotate_prompt

PAIRS = [
    {"id": "a", "premise": "هوا آفتابی است.", "hypothesis": "باران می‌بارد."},
    {"id": "b", "premise": "کتاب روی میز است.", "hypothesis": "میز کتاب دارد."},
]
LOCAL_LOGPROB = AnnotatorParams(kind="llm", method="logprob", shots=0, backend=TransformersBackendParams())
LOCAL_WRITE = AnnotatorParams(kind="llm", method="instruct", shots=0, backend=TransformersBackendParams())
CHAT = AnnotatorParams(kind="llm", method="instruct", backend=OpenAIBackendParams(model="m"))


@pytest.fixture(scope="module")
def prompt(repo_root):
    return load_annotate_prompt(repo_root / "prompts", "fa/nli/annotate")


def tok(text: str, logprob: float, *alts: tuple[str, float]) -> TokenStep:
    return TokenStep(TokenChoice(text.encode(), logprob), tuple(TokenChoice(a.encode(), lp) for a, lp in alts))


def test_local_label_word_scores_become_label_and_softmax_confidence(prompt):
    res = Result(choice_logprobs={"درست": math.log(0.2), "غلط": math.log(0.6), "شاید": math.log(0.1)})
    out = parse_result(res, answer_format(LOCAL_LOGPROB, prompt, NLI_LABELS, "nli"))
    assert out.label == "contradiction" and out.source == "label_word_scores"
    assert out.confidence == pytest.approx(0.6 / 0.9, abs=1e-9)


@pytest.mark.parametrize(
    "result, reason",
    [
        (Result(text="entailment", finish_reason="length", error="finish_reason=length"), "finish_reason=length"),
        (Result(error="empty answer"), "empty answer"),
        (Result(text="probably yes", finish_reason="stop"), "not_a_label_word"),
        (Result(text="maybe", finish_reason="stop"), "not_a_label_word"),
        (Result(text="neutral.", finish_reason="stop"), "not_a_label_word"),
        (Result(text='{"label": "neutral"}', finish_reason="stop"), "not_a_label_word"),  # JSON not asked for
        (Result(error="http 400: bad request"), "http 400"),
    ],
)
def test_plain_answers_that_are_not_exactly_a_label_word_fail(prompt, result, reason):
    out = parse_result(result, answer_format(CHAT, prompt, NLI_LABELS, "nli"))
    assert out.label is None and out.reason.startswith(reason)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("entailment", "not_json"),
        ('{"label": "maybe"}', "schema_violation"),
        ('{"label": "neutral", "why": "x"}', "schema_violation"),
        ('{"label": "neutral"} ok', "not_json"),
        ('["neutral"]', "schema_violation"),
        ('{"label": "Neutral"}', "schema_violation"),
    ],
)
def test_structured_answers_must_match_the_schema(prompt, text, reason):
    out = parse_result(
        Result(text=text, finish_reason="stop", structured=True), answer_format(CHAT, prompt, NLI_LABELS, "nli")
    )
    assert out.label is None and out.reason.startswith(reason)


@pytest.mark.parametrize(
    "text, label, fmt",
    [
        (" neutral\n", "neutral", CHAT),
        ("Contradiction", "contradiction", CHAT),
        ('{"label": "entailment"}', "entailment", CHAT),
        (" غلط", "contradiction", LOCAL_WRITE),
    ],
)
def test_accepted_written_answers(prompt, text, label, fmt):
    structured = text.startswith("{")
    out = parse_result(
        Result(text=text, finish_reason="stop", structured=structured), answer_format(fmt, prompt, NLI_LABELS, "nli")
    )
    assert out.label == label and out.confidence is None and out.source is None  # no logprobs: no confidence


def test_chat_json_confidence_at_the_first_deciding_token(prompt):
    """Multi-token labels under a grammar: ' "' then 'c', 'ont', ...; top_logprobs unconstrained."""
    tokens = (
        tok("{", -0.5),
        tok('"label', -0.1),
        tok('":', -0.1),
        tok(
            ' "c',
            -2.0,
            ("assistant", -0.7),
            (' "c', -2.0),
            (' "e', -1.0),
            (' "ne', -3.0),
            (' "n', -3.5),
            ('"e', -0.2),
            (' "', -1.5),
        ),
        tok("ont", -0.3, ("ont", -0.3), ("ompl", -0.9)),
        tok("radiction", -0.01),
        tok('"}', -0.01),
    )
    text = '{"label": "contradiction"}'
    out = parse_result(
        Result(text=text, tokens=tokens, finish_reason="stop", structured=True),
        answer_format(CHAT, prompt, NLI_LABELS, "nli"),
    )
    # at ' "c' only alternatives that start with the lead ' "' and then one label's word count:
    # c: e^-2; e: e^-1; n: e^-3 + e^-3.5. 'assistant', '"e' (no space) and ' "' (undecided) are left out.
    c, e, n = math.exp(-2.0), math.exp(-1.0), math.exp(-3.0) + math.exp(-3.5)
    assert out.label == "contradiction" and out.source == "answer_token_logprobs" and out.labels_seen == 3
    assert out.confidence == pytest.approx(c / (c + e + n), rel=1e-12)


def test_shared_prefix_labels_are_scored_along_the_answers_path():
    words = {"contradiction": ("contradiction",), "contrast": ("contrast",), "neutral": ("neutral",)}
    fmt = AnswerFormat("write", words, None, chat=True)
    tokens = (
        tok("contr", -0.2, ("contr", -0.2), ("neut", -2.0)),
        tok("adiction", -0.4, ("adiction", -0.4), ("ast", -1.1), ("ary", -2.0)),
    )
    out = parse_result(Result(text="contradiction", tokens=tokens, finish_reason="stop"), fmt)
    # 'contr' fits two labels, so the next token decides between them, each on the path P(contr):
    # contradiction e^-0.2·e^-0.4, contrast e^-0.2·e^-1.1; neutral branched off at the first token, e^-2.0
    c, t, n = math.exp(-0.6), math.exp(-1.3), math.exp(-2.0)
    assert out.confidence == pytest.approx(c / (c + t + n), rel=1e-12)
    assert out.labels_seen == 3


def test_confidence_is_not_conditional_on_a_shared_first_token():
    """Issue 14 (defect 8), the hand-worked case: P(ne) = 0.5, P(pos) = 0.5, P(utral | ne) = 0.99.
    The old confidence, read at the deciding token alone, was 0.99 / 1.01 = 0.98; P(neutral) is
    0.5 · 0.99 = 0.495, P(negative) 0.5 · 0.01, P(positive) 0.5."""
    words = {"negative": ("negative",), "neutral": ("neutral",), "positive": ("positive",)}
    fmt = AnswerFormat("write", words, None, chat=True)
    tokens = (
        tok("ne", math.log(0.5), ("ne", math.log(0.5)), ("pos", math.log(0.5))),
        tok("utral", math.log(0.99), ("utral", math.log(0.99)), ("gative", math.log(0.01))),
    )
    out = parse_result(Result(text="neutral", tokens=tokens, finish_reason="stop"), fmt)
    assert out.label == "neutral" and out.labels_seen == 3
    assert out.confidence == pytest.approx(0.495, rel=1e-9)
    # a label never listed gets the least listed probability times its path: here 'pos' is missing
    # and the bound is max(1 · 0.5 (first position), 0.5 · 0.01) = 0.5
    short = (tok("ne", math.log(0.5), ("ne", math.log(0.5))), tokens[1])
    out = parse_result(Result(text="neutral", tokens=short, finish_reason="stop"), fmt)
    assert out.labels_seen == 2 and out.confidence == pytest.approx(0.495 / (0.495 + 0.005 + 0.5))


def test_score_over_http_reads_first_token_alternatives(prompt):
    fmt = answer_format(
        AnnotatorParams(kind="llm", method="logprob", backend=OpenAIBackendParams(model="m", endpoint="completions")),
        prompt,
        NLI_LABELS,
        "nli",
    )
    first = tok(" د", -0.4, (" د", -0.4), (" غ", -1.2), ("غ", -2.5), (" ش", -2.0), ("\n", -1.0), (" ", -1.5))
    out = parse_result(Result(text=" د", tokens=(first,), finish_reason="length"), fmt)
    d, g, s = math.exp(-0.4), math.exp(-1.2) + math.exp(-2.5), math.exp(-2.0)
    assert out.label == "entailment" and out.source == "first_token_logprobs"
    assert out.confidence == pytest.approx(d / (d + g + s))
    nothing = parse_result(Result(text="\n", tokens=(tok("\n", -0.1, ("\n", -0.1)),)), fmt)
    assert nothing.label is None and nothing.reason.startswith("no_label_in_top_logprobs")


def test_request_shapes_per_annotator_kind(prompt):
    reqs = build_requests(PAIRS, LOCAL_LOGPROB, prompt, [], seed=0, labels=NLI_LABELS, task="nli")
    assert reqs[0].choices == ("درست", "غلط", "شاید") and reqs[0].prompt.endswith("پاسخ:")
    reqs = build_requests(PAIRS, CHAT, prompt, [], seed=0, variant="hypothesis_first", labels=NLI_LABELS, task="nli")
    assert reqs[0].json_schema == label_schema(["entailment", "contradiction", "neutral"], "nli")
    assert reqs[0].kind == "chat" and reqs[0].max_new_tokens == CHAT.max_answer_tokens
    user = reqs[0].messages[1]["content"]
    assert user.index("باران") < user.index("آفتابی")  # hypothesis first
    assert {r.seed for r in reqs} == {0}  # greedy: no per-sample seed
    sampled = CHAT.model_copy(update={"temperature": 0.7})
    first, again = (
        build_requests(PAIRS, sampled, prompt, [], 0, labels=NLI_LABELS, task="nli"),
        build_requests(PAIRS, sampled, prompt, [], 0, attempt=1, labels=NLI_LABELS, task="nli"),
    )
    assert len({r.seed for r in first + again}) == 4  # a seed per row and per attempt
    clf = AnnotatorParams(kind="classifier", model_dir="x")
    assert build_requests(PAIRS, clf, None, [], seed=0, labels=NLI_LABELS, task="nli")[0].kind == "classify"


SHOT_POOL = [
    {"premise": f"متن نمونه {i}", "hypothesis": f"جمله نمونه {i}", "label": lab}
    for i, lab in enumerate(["entailment", "contradiction", "neutral"] * 3)
]


def test_chat_annotators_get_their_shots_as_user_assistant_turns(prompt):
    """Issue 14 (defect 2): shots were ignored for chat annotators (always zero-shot, same cache key)."""
    zero = build_requests(
        PAIRS, CHAT.model_copy(update={"shots": 0}), prompt, SHOT_POOL, seed=0, labels=NLI_LABELS, task="nli"
    )
    assert [m["role"] for m in zero[0].messages] == ["system", "user"]  # shots: 0 stays zero-shot
    two = build_requests(
        PAIRS,
        CHAT.model_copy(update={"shots": 2}),
        prompt,
        SHOT_POOL,
        seed=0,
        variant="hypothesis_first",
        labels=NLI_LABELS,
        task="nli",
    )
    assert [m["role"] for m in two[0].messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    by_premise = {s["premise"]: s for s in SHOT_POOL}
    for user, answer in zip(two[0].messages[1:5:2], two[0].messages[2:5:2]):
        shot = next(s for p, s in by_premise.items() if p in user["content"])
        assert user["content"].index(shot["hypothesis"]) < user["content"].index(shot["premise"])  # the variant
        assert answer["content"] == json.dumps({"label": shot["label"]})  # a JSON-schema request's answer shape
    assert (
        two[0].messages[-1]
        == build_requests(
            PAIRS,
            CHAT.model_copy(update={"shots": 0}),
            prompt,
            SHOT_POOL,
            seed=0,
            variant="hypothesis_first",
            labels=NLI_LABELS,
            task="nli",
        )[0].messages[-1]
    )
    assert two[0].cache_key("m") != zero[0].cache_key("m")  # the shots are in the cache key
    plain = CHAT.model_copy(update={"shots": 1, "backend": OpenAIBackendParams(model="m", structured_output=False)})
    answer = build_requests(PAIRS, plain, prompt, SHOT_POOL, seed=0, labels=NLI_LABELS, task="nli")[0].messages[2][
        "content"
    ]
    assert answer in ("entailment", "contradiction", "neutral")  # the prompt file's assistant template
    local = build_requests(
        PAIRS, LOCAL_WRITE.model_copy(update={"shots": 2}), prompt, SHOT_POOL, seed=0, labels=NLI_LABELS, task="nli"
    )
    assert sum(s["hypothesis"] in local[0].prompt for s in SHOT_POOL) == 2  # the same draw as scoring prompts


def test_sampled_answers_are_asked_again_with_new_seeds_greedy_ones_are_not(prompt):
    fmt = answer_format(CHAT, prompt, NLI_LABELS, "nli")
    asked: list[list[int]] = []

    def ask(requests, keep):  # answers "maybe" to first attempts, a label word afterwards
        asked.append([r.seed for r in requests])
        out = [
            keep(Result(text="maybe" if len(asked) == 1 else "neutral", finish_reason="stop", raw={})) for _ in requests
        ]
        return out, RunStats(requests=len(requests), sent=len(requests))

    sampled = CHAT.model_copy(update={"temperature": 0.7})
    answers, attempts, stats = ask_until_parsed(
        lambda k: build_requests(PAIRS, sampled, prompt, [], 0, attempt=k, labels=NLI_LABELS, task="nli"),
        ask,
        fmt,
        retries=2,
    )
    assert [a.label for a in answers] == ["neutral", "neutral"] and attempts == [2, 2] and stats.sent == 4
    assert set(asked[0]).isdisjoint(asked[1])
    asked.clear()
    answers, attempts, _ = ask_until_parsed(
        lambda k: build_requests(PAIRS, CHAT, prompt, [], 0, attempt=k, labels=NLI_LABELS, task="nli"),
        ask,
        fmt,
        retries=0,
    )
    assert [a.label for a in answers] == [None, None] and len(asked) == 1


def test_shared_shots_give_every_row_one_prefix_but_a_row_whose_premise_is_a_shot(prompt):
    """shot_selection 'shared': one draw of examples for every row, marked as the prompt's shared prefix
    (computed once by the local backend); a row whose premise is one of those examples' draws its own,
    as per-row selection does (its answer must not be shown to it)."""
    shared = LOCAL_LOGPROB.model_copy(update={"shots": 3, "shot_selection": "shared"})
    rows = PAIRS + [{"id": f"r{i}", "premise": f"متن دیگر {i}", "hypothesis": f"جمله {i}"} for i in range(5)]
    reqs = build_requests(rows, shared, prompt, SHOT_POOL, seed=4, labels=NLI_LABELS, task="nli")
    prefixes = {r.prompt[: r.shared_prefix] for r in reqs}
    assert len(prefixes) == 1 and all(r.shared_prefix > 0 for r in reqs)
    head = prefixes.pop()
    assert head.startswith(prompt.scoring.header) and sum(s["hypothesis"] in head for s in SHOT_POOL) == 3
    for row, r in zip(rows, reqs):  # the query follows the prefix, and the prompt is what it always was
        assert r.prompt == head + r.prompt[len(head) :] and row["hypothesis"] in r.prompt[len(head) :]
        assert row["hypothesis"] not in head
    shot = next(s for s in SHOT_POOL if s["hypothesis"] in head)
    clash = {"id": "c", "premise": shot["premise"], "hypothesis": "یک جمله"}
    own = build_requests([clash], shared, prompt, SHOT_POOL, seed=4, labels=NLI_LABELS, task="nli")[0]
    assert own.shared_prefix == 0 and shot["hypothesis"] not in own.prompt
    per_row = build_requests(rows, shared.model_copy(update={"shot_selection": "per_row"}), prompt, SHOT_POOL, 4,
                             labels=NLI_LABELS, task="nli")  # fmt: skip
    assert all(r.shared_prefix == 0 for r in per_row)
    assert len({r.prompt[: len(head)] for r in per_row}) > 1  # per row: the examples differ


def test_requests_without_a_shared_prefix_keep_their_cache_keys():
    """Adding ``shared_prefix`` to Request must not move a single existing key (answers already paid
    for stay cached): a request without one hashes exactly as before the field existed."""
    import hashlib
    from dataclasses import asdict

    from synthllm.calls import Request

    r = Request(prompt="متن", choices=("درست", "غلط"), max_new_tokens=8)
    before = {k: v for k, v in asdict(r).items() if k != "shared_prefix"}
    payload = json.dumps({"backend": "b", **before}, ensure_ascii=False, sort_keys=True, default=list)
    assert r.cache_key("b") == hashlib.sha256(payload.encode("utf-8")).hexdigest()
    marked = Request(prompt="متن", choices=("درست", "غلط"), max_new_tokens=8, shared_prefix=2)
    assert marked.cache_key("b") != r.cache_key("b")  # where the prefix ends changes rounding: its own entry
