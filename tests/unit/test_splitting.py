import pandas as pd
import pytest

from synthllm.errors import InputDataError
from synthllm.params import SplitParams
from synthllm.splitting import split_synthetic

GOLD = {"entailment": 1 / 3, "contradiction": 1 / 3, "neutral": 1 / 3}


def _pool():
    rows = []
    for i in range(120):
        label = "entailment" if i < 60 else "contradiction" if i < 90 else "neutral"
        rows.append(
            {
                "id": f"s{i}",
                "premise_id": f"p{i % 40}",
                "premise": f"p{i % 40}",
                "hypothesis": f"h{i}",
                "label": label,
                "confidence": (i % 10) / 10,
                "status": "ok",
            }
        )
    rows += [
        {
            "id": "f",
            "premise_id": "p0",
            "premise": "p0",
            "hypothesis": "x",
            "label": None,
            "confidence": None,
            "status": "failed",
        }
    ]
    return pd.DataFrame(rows)


def test_natural_keeps_distribution_and_drops_failed():
    train, dev, stats = split_synthetic(_pool(), SplitParams(dev_fraction=0.2), GOLD)
    assert stats["dropped_failed"] == 1
    assert len(train) + len(dev) == 120 and 18 <= len(dev) <= 30
    assert set(dev["label"]) == {"entailment", "contradiction", "neutral"}
    assert set(train["id"]).isdisjoint(dev["id"])
    # grouped by premise: every hypothesis of a premise is on one side
    assert set(train["premise_id"]).isdisjoint(dev["premise_id"])


def test_rows_without_a_confidence_are_never_silently_confident():
    pool = _pool()
    pool.loc[pool.index < 10, "confidence"] = None
    with pytest.raises(InputDataError, match="missing_confidence"):
        split_synthetic(pool, SplitParams(min_confidence=0.5), GOLD)
    _, _, kept = split_synthetic(pool, SplitParams(min_confidence=0.5, missing_confidence="keep"), GOLD)
    _, _, dropped = split_synthetic(pool, SplitParams(min_confidence=0.5, missing_confidence="drop"), GOLD)
    assert kept["kept_without_confidence"] == dropped["dropped_without_confidence"] == 10
    assert kept["train"] + kept["dev"] == dropped["train"] + dropped["dev"] + 10


def test_balanced_and_gold_matched_and_threshold_and_cap():
    train, dev, _ = split_synthetic(_pool(), SplitParams(strategy="balanced"), GOLD)
    assert pd.concat([train, dev])["label"].value_counts().to_dict() == {
        "entailment": 30,
        "contradiction": 30,
        "neutral": 30,
    }
    shares = {"entailment": 0.5, "contradiction": 0.25, "neutral": 0.25}
    train, dev, _ = split_synthetic(_pool(), SplitParams(strategy="gold_matched"), shares)
    assert pd.concat([train, dev])["label"].value_counts().to_dict() == {
        "entailment": 60,
        "contradiction": 30,
        "neutral": 30,
    }
    train, dev, stats = split_synthetic(_pool(), SplitParams(min_confidence=0.5), GOLD)
    assert stats["dropped_low_confidence"] == 60 and (pd.concat([train, dev])["confidence"] >= 0.5).all()
    train, dev, stats = split_synthetic(_pool(), SplitParams(max_size=40), GOLD)
    assert len(train) + len(dev) == 40 and stats["dropped_by_cap"] == 80


def test_same_seed_same_split_and_empty_input_is_an_error():
    a = split_synthetic(_pool(), SplitParams(seed=3), GOLD)[0]
    b = split_synthetic(_pool(), SplitParams(seed=3), GOLD)[0]
    assert list(a["id"]) == list(b["id"])
    with pytest.raises(InputDataError, match="no annotated rows"):
        split_synthetic(pd.DataFrame(), SplitParams(), GOLD)
    with pytest.raises(InputDataError, match="usable synthetic rows"):
        split_synthetic(_pool(), SplitParams(min_confidence=0.95), GOLD)


def test_require_stable_drops_label_flips():
    pool = _pool()
    pool["label_variant"] = pool["label"].where(pool.index % 4 != 0, "neutral")
    train, dev, stats = split_synthetic(pool, SplitParams(require_stable=True), GOLD)
    both = pd.concat([train, dev])
    assert (both["label"] == both["label_variant"]).all()
    # every 4th row was flipped to neutral; those that were neutral already stay
    assert stats["dropped_unstable"] == sum(1 for i in range(120) if i % 4 == 0 and i < 90)
    with pytest.raises(InputDataError, match="stability_variant"):
        split_synthetic(_pool(), SplitParams(require_stable=True), GOLD)


def test_tiny_pools_split_without_stratification_instead_of_crashing():
    rows = [
        {"id": f"s{i}", "premise": f"p{i}", "hypothesis": f"h{i}", "label": lab, "confidence": 1.0, "status": "ok"}
        for i, lab in enumerate(
            [
                "entailment",
                "entailment",
                "neutral",
                "neutral",
                "contradiction",
                "contradiction",
                "entailment",
                "neutral",
            ]
        )
    ]
    train, dev, _ = split_synthetic(pd.DataFrame(rows), SplitParams(dev_fraction=0.2), GOLD)
    assert len(dev) == 2 and len(train) == 6  # 2 held out < 3 labels: a plain seeded split
