from synthllm.backends.base import Result
from synthllm.generation import blocked_texts, filter_generations, select_premises
from synthllm.params import FilterParams


def _meta(premise, label="entailment", sample=0):
    return {
        "premise_id": "t0",
        "premise": premise,
        "intended_label": label,
        "sample": sample,
        "seed": 1,
        "prompt_version": "v",
    }


def test_planted_farstail_test_item_is_filtered(gold_dir):
    from synthllm.io import read_jsonl

    train = read_jsonl(gold_dir / "train.jsonl")[:50]
    val, test = read_jsonl(gold_dir / "val.jsonl"), read_jsonl(gold_dir / "test.jsonl")
    planted = {**test[0], "id": "planted"}  # a FarsTail test pair slipped into the premise pool
    blocked = blocked_texts([val, test])
    chosen, leaked = select_premises(train + [planted], 1000, seed=0, blocked=blocked)
    assert leaked >= 1 and test[0]["premise"] not in {p["premise"] for p in chosen}
    # a generated hypothesis that copies a test hypothesis is dropped as leakage
    meta = [_meta(train[0]["premise"])]
    kept, counts = filter_generations(meta, [Result(text=" " + test[1]["hypothesis"])], FilterParams(), blocked, "gen")
    assert kept == [] and counts["dropped_leakage"] == 1
