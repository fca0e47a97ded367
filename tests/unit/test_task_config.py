"""Task and language come from params and prompt files: validation, text processing, gold, models."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from synthllm.annotation import answer_format, build_requests, parse_result
from synthllm.backends.base import Result
from synthllm.classifiers import load_classifier, train_regime
from synthllm.errors import GoldDataError, ParamsError
from synthllm.generation import filter_generations, label_codes, plan_requests, prompt_seeds
from synthllm.gold import load_local
from synthllm.params import (
    AnnotatorParams,
    FilterParams,
    GenerateParams,
    SklearnClassifierParams,
    TaskParams,
    parse_params,
)
from synthllm.prompts import load_annotate_prompt, load_generate_prompt
from synthllm.text import PERSIAN, TextProcessor

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests/fixtures/sentiment_fa"
SENTIMENT = TaskParams(name="sentiment", input="single", labels=["positive", "negative", "neutral"], text_column="text")


def _params(**changes) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = data
        for key in path:
            node = node[key]
        node[last] = value
    return data


def test_text_processor_normalisers_and_scripts():
    latin = TextProcessor(normalizer="nfkc", script="latin")
    assert latin.normalize("ﬁne   café\u00a0bar ") == "fine café bar"
    assert latin.script_ratio("hello мир") == pytest.approx(5 / 8)
    assert latin.dedup_key("The Books!") == latin.dedup_key("the books")
    assert TextProcessor(normalizer="none", script="any").script_ratio("abc سلام") == 1.0
    assert PERSIAN.normalize("كتاب  علي") == "کتاب علی"  # Arabic kaf/yeh → Persian, spaces collapsed
    assert TextProcessor(normalizer="none").normalize("كتاب") == "كتاب"
    with pytest.raises(ValueError, match="unknown script 'klingon'"):
        TextProcessor(script="klingon")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task.labels": ["positive", "negative"]}, "gold.source 'farstail' is Persian NLI"),
        ({"task.labels": ["a", "a", "b"], "gold.source": "local", "gold.path": "x"}, "duplicates"),
        ({"task.labels": ["good", "bad label"]}, "letters, digits"),
        ({"gold.source": "local"}, "gold.path is required"),
        ({"generate.labels": ["entailment", "positive"]}, r"generate.labels \['positive'\] are not in task.labels"),
        (
            {"task.input": "single", "task.labels": ["pos", "neg"], "gold.source": "local", "gold.path": "x"},
            "stability_variant",
        ),
        ({"task.script": "klingon"}, "task.script"),
    ],
)
def test_task_params_are_validated_up_front(changes, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(_params(**changes))


def test_prompt_files_must_match_the_task(tmp_path):
    with pytest.raises(ParamsError, match="is for language 'fa', task 'nli'"):
        load_annotate_prompt(ROOT / "prompts", "fa/nli/annotate", SENTIMENT)
    odd = SENTIMENT.model_copy(update={"labels": ["positive", "negative"]})
    with pytest.raises(ParamsError, match="label_words name"):
        load_annotate_prompt(ROOT / "prompts", "fa/sentiment/annotate", odd)
    with pytest.raises(ParamsError, match="no label_cues for \\['mixed'\\]"):
        load_generate_prompt(ROOT / "prompts", "fa/sentiment/generate", ["mixed"], SENTIMENT)


def test_label_codes_are_shortest_distinct_prefixes():
    assert label_codes(["entailment", "contradiction", "neutral"]) == {
        "entailment": "e",
        "contradiction": "c",
        "neutral": "n",
    }
    assert label_codes(["positive", "negative", "neutral"]) == {"positive": "pos", "negative": "neg", "neutral": "neu"}


def test_local_gold_folder_single_text_and_pair(tmp_path):
    frames, sha = load_local(FIXTURE, SENTIMENT, PERSIAN)
    assert {k: len(v) for k, v in frames.items()} == {"train": 120, "val": 45, "test": 45}
    assert set(sha) == {"train", "val", "test"} and all(len(h) == 64 for h in sha.values())
    train = frames["train"]
    assert (train["premise"] == "").all() and set(train["label"]) == set(SENTIMENT.labels)

    pair = TaskParams(name="nli", labels=["yes", "no"], premise_column="s1", text_column="s2")
    for split in ("train", "val", "test"):
        pd.DataFrame(
            {"s1": ["a b c", "d e"], "s2": ["a b", "f"], "label": ["yes", "no"], "hard_overlap": [True, False]}
        ).to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    frames, _ = load_local(tmp_path, pair, TextProcessor(normalizer="nfkc", script="latin"))
    assert list(frames["test"]["premise"]) == ["a b c", "d e"] and list(frames["test"]["hard_overlap"]) == [True, False]


@pytest.mark.parametrize(
    "content, message",
    [
        ("words,label\nfoo,positive\n", r"missing columns \['text'\]"),
        ("text,label\nfoo,happy\n", r"labels \['happy'\] are not in task.labels"),
        ("text,label\n ,positive\n", "empty text"),
    ],
)
def test_local_gold_errors_name_the_file_and_the_fix(tmp_path, content, message):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text(content if split == "val" else "text,label\nfoo,positive\n")
    with pytest.raises(GoldDataError, match=message) as err:
        load_local(tmp_path, SENTIMENT, PERSIAN)
    assert "val.csv" in str(err.value)


def test_local_gold_folder_needs_each_split_once(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nfoo,positive\n")
    (tmp_path / "train.jsonl").write_text('{"text": "foo", "label": "positive"}\n')
    with pytest.raises(GoldDataError, match="exactly one of train.jsonl"):
        load_local(tmp_path, SENTIMENT, PERSIAN)


def test_single_text_generation_plans_seeds_and_keeps_texts():
    prompt = load_generate_prompt(ROOT / "prompts", "fa/sentiment/generate", SENTIMENT.labels, SENTIMENT)
    shots = pd.read_csv(FIXTURE / "train.csv").rename(columns={"text": "hypothesis"}).assign(premise="")
    params = GenerateParams(prompt="fa/sentiment/generate", num_premises=4, shots=2)
    requests, meta = plan_requests(prompt_seeds(4), shots.to_dict("records"), prompt, params, SENTIMENT.labels)
    assert len(requests) == 4 * 3 and len({r.prompt for r in requests}) == 12  # seeds vary the shots
    assert requests[0].prompt.startswith(prompt.header) and requests[0].prompt.endswith("نظر مثبت:")
    assert requests[0].prompt.count("نظر مثبت:") == 3  # two shots of the target label, then the query
    results = [Result(text=" این گوشی خیلی خوب است.", finish_reason="stop")] * 12
    kept, counts = filter_generations(meta, results, FilterParams(), set(), "gen")
    # the empty premise is not a text to copy: only the repeats are dropped, as duplicates
    assert counts == {"generated": 12, "kept": 1, "dropped_duplicate": 11}
    assert kept[0]["premise"] == "" and kept[0]["id"] == "syn-s00000-pos0"


def test_latin_script_filter_for_another_language():
    latin = TextProcessor(normalizer="nfkc", script="latin")
    meta = [
        {"premise_id": "s0", "premise": "", "intended_label": "pos", "sample": i, "seed": i, "prompt_version": "v"}
        for i in range(2)
    ]
    results = [
        Result(text=" A lovely little phone.", finish_reason="stop"),
        Result(text=" این گوشی خیلی خوب است.", finish_reason="stop"),
    ]
    kept, counts = filter_generations(meta, results, FilterParams(), set(), "gen", latin)
    assert [r["hypothesis"] for r in kept] == ["A lovely little phone."]
    assert counts["dropped_script_ratio"] == 1


def test_sentiment_annotation_requests_and_answers():
    prompt = load_annotate_prompt(ROOT / "prompts", "fa/sentiment/annotate", SENTIMENT)
    rows = [{"id": "r1", "premise": "", "hypothesis": "این کتاب ناامیدم کرد."}]
    llm = AnnotatorParams(kind="llm", prompt="fa/sentiment/annotate", shots=0, backend={"kind": "transformers"})
    (req,) = build_requests(rows, llm, prompt, [], 0, labels=SENTIMENT.labels, task="sentiment")
    assert req.prompt.endswith("نظر: این کتاب ناامیدم کرد.\nاحساس:")
    assert req.choices == ("مثبت", "منفی", "خنثی")
    fmt = answer_format(llm, prompt, SENTIMENT.labels, "sentiment")
    scored = parse_result(Result(choice_logprobs={"مثبت": -3.0, "منفی": -0.1, "خنثی": -2.0}), fmt)
    assert scored.label == "negative" and scored.source == "label_word_scores"
    chat = answer_format(
        AnnotatorParams(
            kind="llm", method="instruct", prompt="fa/sentiment/annotate", backend={"kind": "openai", "model": "m"}
        ),
        prompt,
        SENTIMENT.labels,
        "sentiment",
    )
    assert chat.schema["schema"]["properties"]["label"]["enum"] == ["positive", "negative", "neutral"]
    assert parse_result(Result(text="neutral", finish_reason="stop"), chat).label == "neutral"
    failed = parse_result(Result(text="entailment", finish_reason="stop"), chat)
    assert failed.label is None and failed.reason.startswith("not_a_label_word")


def test_single_text_classifier_saves_its_label_set(tmp_path):
    frames, _ = load_local(FIXTURE, SENTIMENT, PERSIAN)
    clf, _ = train_regime(
        "gold_only",
        frames["train"],
        None,
        SklearnClassifierParams(n_features=4096),
        gold_epochs=4,
        synthetic_epochs=1,
        seed=1,
        labels=SENTIMENT.labels,
        pair=False,
    )
    clf.save(tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    assert loaded.labels == tuple(SENTIMENT.labels) and loaded.pair is False
    test = frames["test"]
    proba = loaded.predict_proba(list(test["premise"]), list(test["hypothesis"]))
    predicted = [loaded.labels[i] for i in proba.argmax(1)]
    assert proba.shape == (45, 3) and (pd.Series(predicted) == test["label"].to_numpy()).mean() > 0.6
