import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from synthllm import stats
from synthllm.params import NLI_LABELS
from synthllm.reporting.tables import (
    correctness_matrix,
    item_correctness,
    macro_f1_ci,
    mcnemar_per_seed,
    regime_comparisons,
)

RNG = np.random.default_rng(0)
GOLD = RNG.choice(NLI_LABELS, size=300)


def _preds(accuracy: float, seeds=(1, 2, 3)) -> pd.DataFrame:
    rows = []
    for s in seeds:
        rng = np.random.default_rng(s * 100 + int(accuracy * 100))
        right = rng.random(len(GOLD)) < accuracy
        wrong = rng.choice(NLI_LABELS, size=len(GOLD))
        for i, (g, ok, w) in enumerate(zip(GOLD, right, wrong)):
            rows.append({"id": f"t{i:03d}", "seed": f"seed-{s}", "label": g, "predicted": g if ok else w})
    return pd.DataFrame(rows)


def test_vectorised_macro_f1_ci_matches_a_plain_loop():
    preds = _preds(0.7)
    lo, hi = macro_f1_ci(preds, NLI_LABELS, n_resamples=200, seed=3)
    wide = preds.pivot(index="id", columns="seed", values="predicted").sort_index()
    y = preds.drop_duplicates("id").set_index("id")["label"].sort_index().to_numpy()
    idx = np.random.default_rng(3).integers(0, len(y), size=(200, len(y)))
    values = [
        np.mean(
            [
                f1_score(y[i], wide[c].to_numpy()[i], labels=list(NLI_LABELS), average="macro", zero_division=0)
                for c in wide.columns
            ]
        )
        for i in idx
    ]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-9)
    point = np.mean([f1_score(y, wide[c], labels=list(NLI_LABELS), average="macro") for c in wide.columns])
    assert lo < point < hi


def test_regime_comparisons_mark_a_real_difference_and_not_a_null_one():
    preds = {
        "gold__gold_only": _preds(0.6),
        "a__warmup": _preds(0.75),
        "a__mix": _preds(0.6),
        "a__reversed": _preds(0.45),
    }
    comp = regime_comparisons(preds, n_resamples=500).set_index(["a", "b"])
    assert comp.loc[("warmup", "reversed"), "significant"]
    assert comp.loc[("warmup", "reversed"), "delta_accuracy"] == pytest.approx(
        (item_correctness(preds["a__warmup"]) - item_correctness(preds["a__reversed"])).mean()
    )
    assert comp.loc[("warmup", "mix"), "ci_low"] > 0
    # mix and gold_only made identical predictions: no difference, not significant
    assert comp.loc[("mix", "gold_only"), "delta_accuracy"] == 0
    assert not comp.loc[("mix", "gold_only"), "significant"]
    assert comp.loc[("mix", "gold_only"), "mcnemar_p_by_seed"] == "1: 1; 2: 1; 3: 1"
    assert (comp["p_holm"] >= comp["p_value"]).all()  # adjusted over the 4 comparisons made
    assert comp["p_holm"].tolist() == pytest.approx(stats.holm(comp["p_value"].tolist()))


def test_mcnemar_is_reported_for_every_seed_in_numeric_order():
    a, b = _preds(0.7, seeds=(2, 10, 1)), _preds(0.7, seeds=(10, 2, 1))
    assert list(mcnemar_per_seed(a, b)) == [1, 2, 10]  # not 1, 10, 2 (string order)
    assert correctness_matrix(a).shape == (3, 300)


def test_two_level_bootstrap_widens_when_seeds_disagree():
    """Same mean accuracy (0.7) and items; in one case the three seeds agree, in the other they
    differ a lot (0.55, 0.70, 0.85): the item-only view cannot tell them apart, the two-level one can."""
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.7).astype(float)
    agree = np.vstack([base, base, base])
    disagree = np.vstack([(rng.random(400) < q).astype(float) for q in (0.55, 0.70, 0.85)])
    disagree += base.mean() - disagree.mean()  # same overall mean, to isolate the spread
    narrow = stats.two_level_bootstrap(agree, n_resamples=1000, seed=1)
    wide = stats.two_level_bootstrap(disagree, n_resamples=1000, seed=1)
    assert wide["high"] - wide["low"] > 1.5 * (narrow["high"] - narrow["low"])
    item_only = stats.bootstrap_ci(disagree.mean(0), n_resamples=1000, seed=1)
    assert wide["high"] - wide["low"] > item_only[2] - item_only[1]


def test_holm_on_a_hand_worked_p_vector():
    # sorted: 0.01*4=0.04, 0.02*3=0.06, 0.03*2=0.06, 0.04*1=0.04 -> made non-decreasing: 0.04, 0.06, 0.06, 0.06
    assert stats.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5*2 caps at 1; monotone after
    assert stats.holm([]) == []


def test_aggregates_table_lists_every_method_and_the_trained_branch_only_for_the_configured_one():
    from synthllm.reporting.markdown import aggregates_section as aggregates_markdown
    from synthllm.reporting.tables import aggregates_table

    summary = {"accuracy": 0.8, "accuracy_ci": [0.7, 0.9], "macro_f1": 0.79, "ece": 0.05, "coverage": 1.0}
    metrics = {
        "vote": {
            "aggregate": {
                "method": "dawid_skene",
                "members": {"clf": 0.713, "lm": 0.36},
                "methods": {
                    "majority": {**summary, "accuracy": 0.25},
                    "confidence": {"unavailable": "no confidences"},
                    "dawid_skene": summary,
                },
            }
        }
    }
    results = pd.DataFrame(
        {
            "annotator": ["vote", "vote", "gold"],
            "regime": ["warmup", "mix", "gold_only"],
            "accuracy": [0.77, 0.76, 0.76],
        }
    )
    table = aggregates_table(metrics, ["vote"], results, ["warmup", "mix"])
    assert list(table["method"]) == ["majority", "confidence", "dawid_skene"]
    ds = table[table["method"] == "dawid_skene"].iloc[0]
    assert ds["configured"] and ds["test_warmup"] == 0.77 and ds["best_member"] == "clf"
    assert table[table["method"] == "majority"]["test_warmup"].isna().all()
    text = aggregates_markdown(table, ["warmup", "mix"], "FarsTail")
    assert "| vote | dawid_skene ✓ | 80.0 | [70.0, 90.0] | 79.0 | 0.050 | 100.0 | clf 71.3 | 77.0 | 76.0 |" in text
    assert "unavailable: no confidences" in text
