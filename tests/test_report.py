import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from synthllm.params import NLI_LABELS
from synthllm.report import item_correctness, macro_f1_ci, regime_comparisons

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
    values = [np.mean([f1_score(y[i], wide[c].to_numpy()[i], labels=list(NLI_LABELS), average="macro", zero_division=0)
                       for c in wide.columns]) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-9)
    point = np.mean([f1_score(y, wide[c], labels=list(NLI_LABELS), average="macro") for c in wide.columns])
    assert lo < point < hi


def test_regime_comparisons_mark_a_real_difference_and_not_a_null_one():
    preds = {"gold__gold_only": _preds(0.6), "a__warmup": _preds(0.75), "a__mix": _preds(0.6),
             "a__reversed": _preds(0.45)}
    comp = regime_comparisons(preds, n_resamples=500).set_index(["a", "b"])
    assert comp.loc[("warmup", "reversed"), "significant"]
    assert comp.loc[("warmup", "reversed"), "delta_accuracy"] == pytest.approx(
        (item_correctness(preds["a__warmup"]) - item_correctness(preds["a__reversed"])).mean())
    assert comp.loc[("warmup", "mix"), "ci_low"] > 0
    # mix and gold_only made identical predictions: no difference, not significant
    assert comp.loc[("mix", "gold_only"), "delta_accuracy"] == 0
    assert not comp.loc[("mix", "gold_only"), "significant"]
    assert comp.loc[("mix", "gold_only"), "mcnemar_p_first_seed"] == 1.0
    assert comp.loc[("warmup", "reversed"), "mcnemar_p_first_seed"] < 0.001
