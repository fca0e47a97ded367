import pandas as pd
import pytest

from synthllm.aggregation import vote
from synthllm.errors import InputDataError
from synthllm.params import SplitParams
from synthllm.splitting import split_synthetic


def _pool(labels, confs):
    return [{"id": f"s{i}", "premise": "p", "hypothesis": f"h{i}", "intended_label": "neutral",
             "label": lab, "confidence": c, "status": "ok" if lab else "failed", "annotator": "x"}
            for i, (lab, c) in enumerate(zip(labels, confs))]


POOLS = {
    "a": _pool(["entailment", "neutral", "neutral", None], [0.9, 0.5, 0.6, None]),
    "b": _pool(["entailment", "contradiction", "neutral", None], [0.8, 0.9, 0.7, None]),
    "c": _pool(["contradiction", "neutral", "entailment", None], [0.4, 0.3, 0.2, None]),
}


def test_plain_majority_with_agreement_and_failures():
    rows = vote(POOLS, ["a", "b", "c"], weighted=False, name="vote")
    assert [r["label"] for r in rows] == ["entailment", "neutral", "neutral", None]
    assert [r["agreement"] for r in rows[:3]] == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert rows[3]["status"] == "failed" and rows[3]["reason"] == "no member labelled this pair"
    assert rows[0]["votes"] == {"a": "entailment", "b": "entailment", "c": "contradiction"}
    assert rows[0]["annotator"] == "vote" and rows[0]["hypothesis"] == "h0"


def test_weighted_vote_follows_confidence_and_two_way_tie_fails():
    rows = vote(POOLS, ["a", "b"], weighted=True, name="w")
    # s1: a says neutral (0.5), b says contradiction (0.9): weighted goes to contradiction
    assert rows[1]["label"] == "contradiction" and rows[1]["confidence"] == pytest.approx(0.9 / 1.4)
    plain = vote(POOLS, ["a", "b"], weighted=False, name="p")
    assert plain[1]["label"] is None and plain[1]["reason"] == "tied vote"
    with pytest.raises(ValueError, match="no annotations for members"):
        vote(POOLS, ["a", "zz"], weighted=False, name="v")


def test_split_filters_on_agreement_of_aggregated_rows():
    rows = vote({k: v * 10 for k, v in POOLS.items()}, ["a", "b", "c"], weighted=False, name="v")
    for i, r in enumerate(rows):
        r["id"], r["premise_id"] = f"r{i}", f"p{i}"
    df = pd.DataFrame(rows)
    df.loc[df.index % 3 == 0, "agreement"] = 1.0
    train, dev, stats = split_synthetic(df, SplitParams(min_agreement=0.9, dev_fraction=0.2), {})
    assert (pd.concat([train, dev])["agreement"] >= 0.9).all() and stats["dropped_low_agreement"] > 0
    single = pd.DataFrame(POOLS["a"] * 5)
    with pytest.raises(InputDataError, match="aggregated annotators only"):
        split_synthetic(single, SplitParams(min_agreement=0.5), {})


def test_weighted_vote_refuses_labels_without_confidence_unless_a_fallback_is_named():
    pools = {k: [dict(r) for r in v] for k, v in POOLS.items()}
    for r in pools["b"]:
        r["confidence"] = None  # b's server returned no logprobs
    with pytest.raises(InputDataError, match="confidence_fallback"):
        vote(pools, ["a", "b", "c"], weighted=True, name="v")
    rows = vote(pools, ["a", "b", "c"], weighted=True, name="v", confidence_fallback=0.5)
    # row 1: a neutral 0.5 + c neutral 0.3 = 0.8 vs b contradiction at the named fallback 0.5
    assert rows[1]["label"] == "neutral" and rows[1]["confidence"] == pytest.approx(0.8 / 1.3)
    assert vote(pools, ["a", "b", "c"], weighted=False, name="v")[0]["label"] == "entailment"  # unweighted: fine
