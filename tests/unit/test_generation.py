from synthllm.backends.base import Result, Usage
from synthllm.generation import blocked_texts, filter_generations, plan_requests, select_premises
from synthllm.params import NLI_LABELS, FilterParams, GenerateParams
from synthllm.prompts import load_generate_prompt

TRAIN = [
    {"id": f"t{i}", "premise": p, "hypothesis": h, "label": lab}
    for i, (p, h, lab) in enumerate(
        [
            ("کتاب‌ها در کتابخانه مرکزی شهر نگهداری می‌شوند.", "کتاب‌ها در کتابخانه هستند.", "entailment"),
            ("کتاب‌ها در کتابخانه مرکزی شهر نگهداری می‌شوند.", "کتابخانه خالی است.", "contradiction"),
            ("رودخانه از میان شهر می‌گذرد و به دریا می‌ریزد.", "رودخانه ماهی دارد.", "neutral"),
            ("دانشجویان در آزمون پایانی شرکت کردند.", "آزمونی برگزار شد.", "entailment"),
            ("هوای امروز تهران آفتابی و گرم بود.", "امروز باران بارید.", "contradiction"),
            ("پزشک به بیمار دارو داد.", "بیمار بهبود یافت.", "neutral"),
        ]
    )
]


def test_select_premises_is_seeded_distinct_and_skips_leaked():
    blocked = blocked_texts([[{"premise": "پزشک به بیمار دارو داد.", "hypothesis": "x"}]])
    a, leaked = select_premises(TRAIN, 10, seed=1, blocked=blocked)
    b, _ = select_premises(TRAIN, 10, seed=1, blocked=blocked)
    assert a == b
    assert leaked == 1
    assert len(a) == 4  # five distinct premises, one leaked into val/test
    assert "پزشک به بیمار دارو داد." not in {p["premise"] for p in a}


def test_plan_requests_one_per_premise_label_sample_with_label_cue(repo_root):
    params = GenerateParams(num_premises=2, samples_per_label=2, shots=1)
    prompt = load_generate_prompt(repo_root / "prompts", params.prompt, NLI_LABELS)
    premises, _ = select_premises(TRAIN, 2, seed=0, blocked=set())
    requests, meta = plan_requests(premises, TRAIN, prompt, params, NLI_LABELS)
    assert len(requests) == 2 * 3 * 2
    assert len({r.seed for r in requests}) == len(requests)  # n samples are n cache entries
    for req, m in zip(requests, meta):
        assert req.prompt.endswith(
            prompt.query.format(premise=m["premise"], cue=prompt.label_cues[m["intended_label"]])
        )
        assert m["prompt_version"] == "fa-nli-generate-v1"
        # the shot never shows the query's own premise
        assert req.prompt.count(m["premise"]) == 1
    again, _ = plan_requests(premises, TRAIN, prompt, params, NLI_LABELS)
    assert again == requests


def _meta(premise, label="entailment", sample=0):
    return {
        "premise_id": "t0",
        "premise": premise,
        "intended_label": label,
        "sample": sample,
        "seed": 1,
        "prompt_version": "v",
    }


def test_filters_count_every_reason():
    premise = "کتاب‌ها در کتابخانه مرکزی شهر نگهداری می‌شوند."
    cases = [
        (Result(text=" کتاب‌ها در کتابخانه مرکزی هستند."), None),
        (Result(text=" کتاب‌ها در کتابخانه مرکزی هستند."), "duplicate"),
        (Result(error="http 500"), "backend_error"),
        (Result(text=" کتاب‌ها در کتابخانه", finish_reason="length"), "truncated"),
        (Result(text="  "), "empty"),
        (Result(text=" the books are in the library"), "script_ratio"),
        (Result(text=" کتاب"), "too_short"),
        (Result(text=" " + "کتاب " * 50), "too_long"),
        (Result(text=premise), "copy_of_premise"),
        (Result(text=" آزمونی برگزار شد و همه آمدند."), "leakage"),
    ]
    meta = [_meta(premise, sample=i) for i in range(len(cases))]
    blocked = blocked_texts([[{"premise": "-", "hypothesis": "آزمونی برگزار شد و همه آمدند."}]])
    kept, counts = filter_generations(meta, [c[0] for c in cases], FilterParams(max_words=40), blocked, "gen:x")
    assert len(kept) == 1 and kept[0]["hypothesis"] == "کتاب‌ها در کتابخانه مرکزی هستند."
    assert kept[0]["generator"] == "gen:x" and kept[0]["intended_label"] == "entailment"
    expected = {f"dropped_{r}": 1 for _, r in cases if r}
    assert counts == {"generated": len(cases), "kept": 1, **expected}


def test_result_usage_roundtrip():
    r = Result(text="x", usage=Usage(3, 4))
    assert Result.from_json(r.to_json()) == r


def test_near_duplicate_leakage_is_dropped_and_counted():
    from synthllm.text import near_duplicates

    gold_test = [
        {"premise": "هوای امروز تهران آفتابی و گرم بود.", "hypothesis": "امروز در تهران هوا گرم و آفتابی بود."}
    ]
    blocked = blocked_texts([gold_test])
    meta = [
        {
            "premise_id": f"t{i}",
            "premise": "پزشک به بیمار دارو داد.",
            "intended_label": "neutral",
            "sample": 0,
            "seed": i,
            "prompt_version": "v",
        }
        for i in range(3)
    ]
    results = [
        Result(text=" امروز در تهران هوا گرم و آفتابی بود", finish_reason="stop"),  # no final period
        Result(text=" امروز در شهر تهران هوا گرم و آفتابی بود.", finish_reason="stop"),  # one word added
        Result(text=" بیمار پس از یک هفته بهبود یافت.", finish_reason="stop"),
    ]
    kept, counts = filter_generations(meta, results, FilterParams(min_script_ratio=0.5), blocked, "gen")
    assert [r["hypothesis"] for r in kept] == ["بیمار پس از یک هفته بهبود یافت."]
    assert counts["dropped_leakage"] == 1 and counts["dropped_near_leakage"] == 1
    off = FilterParams(min_script_ratio=0.5, near_leakage_jaccard=None)
    assert len(filter_generations(meta, results, off, blocked, "gen")[0]) == 2
    # the vectorised Jaccard equals a plain set computation
    a, b = "abcdefgh", "abcdxfgh"
    grams = lambda t: {t[i : i + 4] for i in range(len(t) - 3)}  # noqa: E731
    j = len(grams(a) & grams(b)) / len(grams(a) | grams(b))
    assert near_duplicates([a], [b], 4, j) == [True] and near_duplicates([a], [b], 4, j + 1e-9) == [False]
