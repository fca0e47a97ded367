import numpy as np
import pandas as pd
import pytest
from edit_params import load_params

from synthllm.aggregation import MISSING, aggregate, compare_methods, dawid_skene
from synthllm.errors import InputDataError, ParamsError
from synthllm.params import NLI_LABELS, AggregateParams, SplitParams, parse_params
from synthllm.splitting import split_synthetic

E, C, N = NLI_LABELS


def _pool(labels, confs, gold=None):
    rows = [
        {
            "id": f"s{i}",
            "premise": "p",
            "hypothesis": f"h{i}",
            "intended_label": "neutral",
            "label": lab,
            "confidence": c,
            "status": "ok" if lab else "failed",
            "annotator": "x",
        }
        for i, (lab, c) in enumerate(zip(labels, confs))
    ]
    for r, g in zip(rows, gold or []):
        r["gold_label"] = g
    return rows


POOLS = {
    "a": _pool([E, N, N, None], [0.9, 0.5, 0.6, None]),
    "b": _pool([E, C, N, None], [0.8, 0.9, 0.7, None]),
    "c": _pool([C, N, E, None], [0.4, 0.3, 0.2, None]),
}


def vote(pools, members, method, **kw):
    return aggregate(pools, pools, AggregateParams(members=members, method=method, **kw), "vote", NLI_LABELS)[0]


def test_plain_majority_with_agreement_and_failures():
    rows = vote(POOLS, ["a", "b", "c"], "majority")
    assert [r["label"] for r in rows] == [E, N, N, None]
    assert [r["agreement"] for r in rows[:3]] == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert rows[3]["status"] == "failed" and rows[3]["reason"] == "no member labelled this pair"
    assert rows[0]["votes"] == {"a": E, "b": E, "c": C}
    assert rows[0]["annotator"] == "vote" and rows[0]["hypothesis"] == "h0"
    assert rows[0]["confidence"] == pytest.approx(2 / 3)  # two of three votes, over all members
    assert sum(rows[0]["posterior"].values()) == pytest.approx(1.0)


def test_weighted_vote_follows_confidence_and_two_way_tie_fails():
    rows = vote(POOLS, ["a", "b"], "confidence")
    # s1: a says neutral (0.5), b says contradiction (0.9): weighted goes to contradiction; the pooled
    # probability is (0.9 + 0.5/3 + 0.1/3) / 2
    assert rows[1]["label"] == C and rows[1]["confidence"] == pytest.approx((0.9 + 0.6 / 3) / 2)
    plain = vote(POOLS, ["a", "b"], "majority")
    assert plain[1]["label"] is None and plain[1]["reason"] == "tied vote"
    with pytest.raises(ValueError, match="no annotations for members"):
        vote(POOLS, ["a", "zz"], "majority")


def test_a_missing_member_counts_against_certainty():
    """Issue 14 (defect 3): two of three members failed and the third said 0.34: the old vote's
    confidence was its share of the weight cast, 1.0."""
    pools = {"a": _pool([E], [0.34]), "b": _pool([None], [None]), "c": _pool([None], [None])}
    alone = vote(pools, ["a", "b", "c"], "confidence")[0]
    assert alone["label"] == E and alone["confidence"] == pytest.approx((0.34 + (0.66 + 2) / 3) / 3)
    assert alone["confidence"] < 0.5
    # the missing member b replaced by one that agrees (at the same confidence) or dissents (less sure)
    agree = vote({**pools, "b": _pool([E], [0.34])}, ["a", "b", "c"], "confidence")[0]["confidence"]
    dissent = vote({**pools, "b": _pool([C], [0.2])}, ["a", "b", "c"], "confidence")[0]["confidence"]
    assert dissent < alone["confidence"] < agree
    for method in ("majority", "confidence"):
        two = vote(
            {"a": _pool([E], [0.9]), "b": _pool([E], [0.9]), "c": _pool([None], [None])}, ["a", "b", "c"], method
        )[0]["confidence"]
        three = vote({m: _pool([E], [0.9]) for m in "abc"}, ["a", "b", "c"], method)[0]["confidence"]
        assert two < three


def test_split_filters_on_agreement_of_aggregated_rows():
    rows = vote({k: v * 10 for k, v in POOLS.items()}, ["a", "b", "c"], "majority")
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
        vote(pools, ["a", "b", "c"], "confidence")
    rows = vote(pools, ["a", "b", "c"], "confidence", confidence_fallback=0.5)
    # row 1: a neutral 0.5 + c neutral 0.3 = 0.8 vs b contradiction at the named fallback 0.5
    assert rows[1]["label"] == N
    assert vote(pools, ["a", "b", "c"], "majority")[0]["label"] == E  # unweighted: fine


# --- learned reliabilities ------------------------------------------------------------------------


def _simulated(n, seed):
    """One good member (80 % right, otherwise a random other label, modest confidence) and two bad
    ones that agree on the same wrong label 80 % of the time, confidently."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    good = np.where(rng.random(n) < 0.8, truth, (truth + rng.integers(1, 3, n)) % 3)
    bad = [np.where(rng.random(n) < 0.8, (truth + 1) % 3, truth) for _ in range(2)]
    name = np.array(NLI_LABELS)
    gold = list(name[truth])
    members = {
        "good": _pool(list(name[good]), [0.6] * n, gold),
        "bad1": _pool(list(name[bad[0]]), [0.9] * n, gold),
        "bad2": _pool(list(name[bad[1]]), [0.9] * n, gold),
    }
    return members, gold


def _accuracy(rows, gold):
    return float(np.mean([r["label"] == g for r, g in zip(rows, gold)]))


def test_learned_votes_beat_the_best_member_where_confidence_follows_the_bad_ones():
    pools, truth = _simulated(600, seed=1)
    audits, audit_gold = _simulated(150, seed=2)
    good = _accuracy(pools["good"], truth)
    assert 0.75 < good < 0.85
    members = ["good", "bad1", "bad2"]
    acc = {}
    for method in ("majority", "confidence", "audit_weighted", "dawid_skene"):
        pool, audit = aggregate(pools, audits, AggregateParams(members=members, method=method), "v", NLI_LABELS)
        acc[method] = (_accuracy(pool, truth), _accuracy(audit, audit_gold))
    assert acc["confidence"][0] < good and acc["confidence"][1] < _accuracy(audits["good"], audit_gold)
    for method in ("audit_weighted", "dawid_skene"):
        assert acc[method][0] >= good, acc
        assert acc[method][1] >= _accuracy(audits["good"], audit_gold), acc  # out of fold
    table = compare_methods(pools, audits, AggregateParams(members=members, method="dawid_skene"), "v", NLI_LABELS)
    assert table["method"] == "dawid_skene" and set(table["methods"]) == {
        "majority",
        "confidence",
        "audit_weighted",
        "dawid_skene",
    }
    assert table["methods"]["dawid_skene"]["accuracy"] == pytest.approx(acc["dawid_skene"][1], abs=1e-6)
    low, high = table["methods"]["dawid_skene"]["accuracy_ci"]
    assert low <= acc["dawid_skene"][1] <= high
    assert table["members"]["good"] == pytest.approx(_accuracy(audits["good"], audit_gold), abs=1e-6)


def test_audit_labels_are_out_of_fold():
    """A row's audit label never uses its own gold label: changing it leaves that row's posterior as
    it was (while the pool, labelled with the whole audit, may move)."""
    pools, _ = _simulated(200, seed=3)
    audits, _ = _simulated(60, seed=4)
    members = ["good", "bad1", "bad2"]
    for method in ("audit_weighted", "dawid_skene"):
        cfg = AggregateParams(members=members, method=method, folds=3)
        _, before = aggregate(pools, audits, cfg, "v", NLI_LABELS)
        changed = {m: [dict(r) for r in rows] for m, rows in audits.items()}
        flipped = NLI_LABELS[(NLI_LABELS.index(changed["good"][0]["gold_label"]) + 1) % 3]
        for m in members:
            changed[m][0]["gold_label"] = flipped
        _, after = aggregate(pools, changed, cfg, "v", NLI_LABELS)
        assert after[0]["posterior"] == before[0]["posterior"]
        assert after[0]["fold"] == before[0]["fold"]
        assert {r["fold"] for r in after} == {0, 1, 2}
        assert any(a["posterior"] != b["posterior"] for a, b in zip(after[1:], before[1:]))  # other folds use it


def test_learned_votes_are_deterministic_and_a_missing_member_gives_no_evidence():
    pools, _ = _simulated(100, seed=5)
    audits, _ = _simulated(40, seed=6)
    pools["bad1"][0] = {**pools["bad1"][0], "label": None, "confidence": None, "status": "failed"}
    cfg = AggregateParams(members=["good", "bad1", "bad2"], method="dawid_skene")
    first, again = aggregate(pools, audits, cfg, "v", NLI_LABELS), aggregate(pools, audits, cfg, "v", NLI_LABELS)
    assert first == again
    row = first[0][0]
    assert row["votes"]["bad1"] is None and row["status"] == "ok"
    nobody = {
        m: [{**r, "label": None, "confidence": None} if i == 1 else r for i, r in enumerate(rows)]
        for m, rows in pools.items()
    }
    rows, _ = aggregate(nobody, audits, cfg, "v", NLI_LABELS)
    assert rows[1]["status"] == "failed" and rows[1]["reason"] == "no member labelled this pair"


def test_one_em_step_by_hand():
    """Two labels, two members, three rows: (a, a), (a, b), (b, b); smoothing 1, no gold.
    Start: vote shares [1, 0], [.5, .5], [0, 1]; prior [.5, .5]. Confusion counts (truth × said) + 1:
    member 0 [[2.5, 1], [1.5, 2]] → rows /3.5; member 1 [[2, 1.5], [1, 2.5]] → rows /3.5.
    E-step, row 0: a ∝ 5/7·4/7 = 20/49, b ∝ 3/7·2/7 = 6/49 → [10/13, 3/13]; row 1: 15/49 each;
    row 2: [3/13, 10/13]. M-step, member 0, truth a: said a 10/13 + 1/2 = 33/26, said b 3/13 = 6/26,
    + 1 each → [59/26, 32/26] / (91/26)."""
    codes = np.array([[0, 0], [0, 1], [1, 1]])
    post, theta, prior = dawid_skene(codes, 2, smoothing=1.0, max_iter=1)
    assert post == pytest.approx(np.array([[10 / 13, 3 / 13], [0.5, 0.5], [3 / 13, 10 / 13]]), abs=1e-12)
    assert theta[0][0] == pytest.approx([59 / 91, 32 / 91], abs=1e-12)
    assert prior == pytest.approx([0.5, 0.5])
    anchored, _, _ = dawid_skene(codes, 2, gold=np.array([MISSING, 1, MISSING]), smoothing=1.0, max_iter=1)
    assert anchored[1] == pytest.approx([0.0, 1.0])  # a gold row keeps its label as known truth


def test_dawid_skene_agrees_with_crowd_kit_on_unanchored_data():
    from crowdkit.aggregation import DawidSkene

    rng = np.random.default_rng(0)
    n, members = 300, 4
    truth = rng.integers(0, 3, n)
    skill = np.array([0.8, 0.6, 0.5, 0.4])
    codes = np.where(rng.random((n, members)) < skill, truth[:, None], rng.integers(0, 3, (n, members)))
    codes[rng.random((n, members)) < 0.1] = MISSING
    codes[(codes == MISSING).all(axis=1), 0] = 0
    ours, _, _ = dawid_skene(codes, 3, max_iter=50, tol=-1.0)  # every iteration, as crowd-kit below
    data = pd.DataFrame(
        [(i, m, int(codes[i, m])) for i in range(n) for m in range(members) if codes[i, m] != MISSING],
        columns=["task", "worker", "label"],
    )
    theirs = DawidSkene(n_iter=50, tol=-np.inf).fit(data).probas_.sort_index()[[0, 1, 2]].to_numpy()
    assert np.abs(ours - theirs).max() < 1e-6


def _params(base_params, **agg):
    params = base_params()
    params["aggregates"] = {"vote": {"members": ["classifier", "gemma"], **agg}}
    return params


def test_vote_params_are_validated(repo_root):
    def base():
        return load_params(repo_root / "params.yaml")

    def refused(match, **agg):
        with pytest.raises(ParamsError, match=match):
            parse_params(_params(base, **agg))

    refused("majority", method="plurality")
    refused("'weighted' is gone", weighted=True)
    refused("confidence_fallback is read by method 'confidence' only", method="dawid_skene", confidence_fallback=0.5)
    refused(r"\['folds'\] are read by the learned methods", method="majority", folds=3)
    params = _params(base, method="dawid_skene")
    params["task"]["labels"] = [f"label{i}" for i in range(12)]  # 12 labels, 5 folds: 15 audit rows at least
    params["gold"].update(source="local", path="data/my_gold")
    params["annotate"]["audit_size"] = 12
    with pytest.raises(ParamsError, match=r"annotate.audit_size >= 15 \(it is 12\)"):
        parse_params(params)
    params["annotate"]["audit_size"] = 15
    assert parse_params(params).aggregates["vote"].folds == 5
    ok = parse_params(_params(base, method="audit_weighted")).aggregates["vote"]
    assert (ok.folds, ok.smoothing, ok.seed) == (5, 1.0, 0)
    assert AggregateParams(members=["a", "b"], method="audit_weighted", folds=3).min_audit(3) == 5


def test_the_comparison_survives_a_method_that_labels_nothing():
    """Two members that always disagree: the majority ties on every row (no labels, no ECE)."""
    pools = {"a": _pool([E, E], [0.9, 0.9], [E, E]), "b": _pool([C, C], [0.9, 0.9], [E, E])}
    audits = {m: [dict(r, id=f"v{i}") for i, r in enumerate(rows * 6)] for m, rows in pools.items()}
    table = compare_methods(pools, audits, AggregateParams(members=["a", "b"], method="majority"), "v", NLI_LABELS)
    assert table["methods"]["majority"]["ece"] is None and table["methods"]["majority"]["coverage"] == 0.0
    assert table["methods"]["confidence"]["ece"] is None  # equal confidences: every row ties
