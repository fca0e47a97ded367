import math

import pytest

from synthllm.annotation import LABEL_SCHEMA, annotate_rows, build_requests, parse_result
from synthllm.backends import run_requests
from synthllm.backends.base import Result
from synthllm.backends.classifier import ClassifierBackend
from synthllm.classifier import train_regime
from synthllm.io import read_frame
from synthllm.params import AnnotatorParams, OpenAIBackendParams, SklearnClassifierParams, TransformersBackendParams
from synthllm.prompts import load_annotate_prompt

PAIRS = [{"id": "a", "premise": "هوا آفتابی است.", "hypothesis": "باران می‌بارد."},
         {"id": "b", "premise": "کتاب روی میز است.", "hypothesis": "میز کتاب دارد."}]


@pytest.fixture(scope="module")
def prompt(repo_root):
    return load_annotate_prompt(repo_root / "prompts", "fa/nli/annotate")


def test_logprob_answers_become_label_and_softmax_confidence(prompt):
    res = Result(choice_logprobs={"درست": math.log(0.2), "غلط": math.log(0.6), "شاید": math.log(0.1)})
    out = parse_result(res, prompt)
    assert out["label"] == "contradiction" and out["status"] == "ok"
    assert out["confidence"] == pytest.approx(0.6 / 0.9, abs=1e-6)


@pytest.mark.parametrize("result, reason", [
    (Result(text="entailment", finish_reason="length"), "finish_reason=length"),
    (Result(text="neutral", finish_reason="content_filter"), "finish_reason=content_filter"),
    (Result(text="  ", finish_reason="stop"), "empty answer"),
    (Result(text="probably yes", finish_reason="stop"), "answer outside the label set"),
    (Result(text='{"label": "maybe-ish"}', finish_reason="stop"), "answer outside the label set"),
    (Result(error="http 400: bad request"), "http 400"),
])
def test_failures_are_never_guessed(prompt, result, reason):
    out = parse_result(result, prompt)
    assert out["status"] == "failed" and out["label"] is None
    assert reason in out["reason"]


@pytest.mark.parametrize("text, label", [
    ("neutral", "neutral"), (" غلط", "contradiction"), ('{"label": "entailment"}', "entailment"),
    ("درست.", "entailment"), ("Contradiction", "contradiction"), ("شاید\n", "neutral"),
])
def test_written_answers_in_english_or_persian(prompt, text, label):
    assert parse_result(Result(text=text, finish_reason="stop"), prompt)["label"] == label


def test_request_shapes_per_annotator_kind(prompt):
    llm = AnnotatorParams(kind="llm", method="logprob", shots=0, backend=TransformersBackendParams())
    reqs = build_requests(PAIRS, llm, prompt, [], seed=0)
    assert reqs[0].choices == ("درست", "غلط", "شاید") and reqs[0].prompt.endswith("پاسخ:")
    chat = AnnotatorParams(kind="llm", method="instruct", backend=OpenAIBackendParams(model="m"))
    reqs = build_requests(PAIRS, chat, prompt, [], seed=0, variant="hypothesis_first")
    assert reqs[0].json_schema == LABEL_SCHEMA and reqs[0].kind == "chat"
    user = reqs[0].messages[1]["content"]
    assert user.index("باران") < user.index("آفتابی")  # hypothesis first
    clf = AnnotatorParams(kind="classifier", model_dir="x")
    assert build_requests(PAIRS, clf, None, [], seed=0)[0].kind == "classify"


def test_classifier_annotator_labels_every_row(gold_dir, tmp_path):
    gold = read_frame(gold_dir / "train.jsonl").head(600)
    clf, _ = train_regime("gold_only", gold, None, SklearnClassifierParams(n_features=2**14),
                          gold_epochs=2, synthetic_epochs=1, seed=0)
    clf.save(tmp_path / "clf")
    backend = ClassifierBackend(tmp_path / "clf")
    cfg = AnnotatorParams(kind="classifier", model_dir=str(tmp_path / "clf"))
    val = read_frame(gold_dir / "val.jsonl").head(50).to_dict("records")
    results, stats = run_requests(backend, build_requests(val, cfg, None, [], 0), progress=False)
    rows = annotate_rows(val, results, None, "classifier")
    assert len(rows) == 50 and stats.failures == 0
    assert all(r["label"] in ("entailment", "contradiction", "neutral") and 0.33 < r["confidence"] <= 1 for r in rows)
