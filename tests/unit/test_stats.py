"""Tests for synthllm.stats: hand-computed numbers, and agreement with sklearn where it wraps it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from synthllm import stats

# --- agreement -------------------------------------------------------------------------------


def test_cohen_kappa_equals_sklearn_and_drops_missing_pairs():
    a = ["e", "n", "c", "e", None, "e", "c", "n", "n", "e", "c"]
    b = ["e", "c", "c", "e", "e", "n", "c", "n", None, "e", "e"]
    kept = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    expected = cohen_kappa_score([x for x, _ in kept], [y for _, y in kept])
    assert stats.cohen_kappa(a, b) == pytest.approx(expected)
    # float NaN (as pandas writes missing values) is treated like None
    a_nan = [float("nan") if v is None else v for v in a]
    assert stats.cohen_kappa(a_nan, b) == pytest.approx(expected)


def test_cohen_kappa_hand_example():
    # p_o = 3/4; p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa = (0.75 - 0.5) / 0.5
    assert stats.cohen_kappa(["y", "y", "n", "n"], ["y", "n", "n", "n"]) == pytest.approx(0.5)


def test_pairwise_kappa_covers_every_pair_once():
    labels = {
        "gpt": ["e", "n", "c", "e"],
        "llama": ["e", "n", "c", "e"],
        "human": ["c", "n", "c", "e"],
    }
    out = stats.pairwise_kappa(labels)
    assert set(out) == {("gpt", "llama"), ("gpt", "human"), ("llama", "human")}
    assert out[("gpt", "llama")] == pytest.approx(1.0)
    assert out[("gpt", "human")] == pytest.approx(cohen_kappa_score(labels["gpt"], labels["human"]))


# Wikipedia "Fleiss' kappa" worked example: 10 items, 14 raters, 5 categories; n_ij counts.
WIKI_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
CATS = ["1", "2", "3", "4", "5"]


def _ratings_from_counts(counts):
    return [[c for c, k in zip(CATS, row) for _ in range(k)] for row in counts]


def test_fleiss_kappa_matches_hand_computed_wikipedia_example():
    # By hand: P_i = (sum_j n_ij^2 - 14) / (14 * 13); the numerators are
    # 182, 46, 56, 80, 60, 84, 44, 32, 52, 52 -> sum 688, so P_bar = 688 / 1820.
    # Column totals 20, 28, 39, 21, 32 of 140 -> P_e = (400+784+1521+441+1024) / 140^2 = 4170 / 19600.
    p_bar = 688 / 1820
    p_e = 4170 / 19600
    by_hand = (p_bar - p_e) / (1 - p_e)
    assert by_hand == pytest.approx(0.2099, abs=1e-4)
    assert stats.fleiss_kappa(_ratings_from_counts(WIKI_COUNTS), CATS) == pytest.approx(by_hand)


def test_fleiss_kappa_drops_items_with_a_missing_label():
    ratings = _ratings_from_counts(WIKI_COUNTS)
    ratings.append(["1"] * 13 + [None])
    assert stats.fleiss_kappa(ratings, CATS) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_perfect_agreement_is_one():
    ratings = [["e"] * 3, ["n"] * 3, ["c"] * 3, ["e"] * 3]
    assert stats.fleiss_kappa(ratings, ["e", "n", "c"]) == pytest.approx(1.0)


def test_fleiss_kappa_rejects_unknown_labels():
    with pytest.raises(ValueError, match="not one of the categories"):
        stats.fleiss_kappa([["e", "x"], ["e", "e"]], ["e", "n", "c"])


def test_confusion_rows_are_first_sequence_and_missing_dropped():
    gold = ["e", "e", "n", "c", "c", None]
    pred = ["e", "n", "n", "e", "c", "c"]
    assert stats.confusion(gold, pred, ["e", "n", "c"]) == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    out = stats.annotator_confusion({"gold": gold, "gpt": pred}, "gold", "gpt", ["e", "n", "c"])
    assert out["rows"] == "gold" and out["columns"] == "gpt"
    assert out["matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_label_distribution_ignores_missing():
    dist = stats.label_distribution(["e", "e", "n", None, "e"], ["e", "n", "c"])
    assert dist == pytest.approx({"e": 0.75, "n": 0.25, "c": 0.0})


# --- calibration -----------------------------------------------------------------------------


def test_ece_hand_example():
    conf = [0.9, 0.9, 0.9, 0.9, 0.6, 0.6, 0.3, 0.3]
    correct = [1, 1, 1, 0, 1, 0, 0, 0]
    # bins: 0.9 -> acc .75, gap .15, weight 4/8; 0.6 -> acc .5, gap .1, weight 2/8;
    # 0.3 -> acc 0, gap .3, weight 2/8.  ECE = .075 + .025 + .075
    assert stats.expected_calibration_error(conf, correct) == pytest.approx(0.175)


def test_ece_bins_do_not_cancel_over_and_underconfidence():
    conf = [0.2, 0.2, 0.8, 0.8]
    correct = [1, 1, 0, 0]
    assert stats.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.8)
    # one bin: accuracy .5 equals mean confidence .5
    assert stats.expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(0.0)


# --- uncertainty -----------------------------------------------------------------------------


def test_bootstrap_ci_is_reproducible_and_brackets_the_point():
    correct = np.array([1] * 70 + [0] * 30)
    first = stats.bootstrap_ci(correct, seed=7)
    assert first == stats.bootstrap_ci(correct, seed=7)
    assert first != stats.bootstrap_ci(correct, seed=8)
    point, low, high = first
    assert point == pytest.approx(0.7)
    assert low < point < high
    # normal approximation: 0.7 +- 1.96 * sqrt(0.21 / 100) = [0.610, 0.790]
    assert low == pytest.approx(0.610, abs=0.03)
    assert high == pytest.approx(0.790, abs=0.03)


def test_bootstrap_metric_ci_for_macro_f1():
    rng = np.random.default_rng(0)
    y_true = rng.choice(["e", "n", "c"], size=150)
    y_pred = np.where(rng.random(150) < 0.8, y_true, rng.choice(["e", "n", "c"], size=150))
    result = stats.bootstrap_metric_ci(y_true, y_pred, stats.macro_f1, n_resamples=300, seed=1)
    assert result == stats.bootstrap_metric_ci(y_true, y_pred, stats.macro_f1, n_resamples=300, seed=1)
    point, low, high = result
    assert point == pytest.approx(stats.macro_f1(y_true, y_pred))
    assert low < point < high
    assert low > 0.6 and high < 1.0


def test_macro_f1_counts_missing_prediction_as_wrong_without_extra_class():
    # e: P=1, R=1/2, F1=2/3; n: P=R=F1=1; macro over gold classes {e, n} = 5/6 (no "missing" class)
    assert stats.macro_f1(["e", "e", "n"], ["e", None, "n"]) == pytest.approx(5 / 6)


def _two_systems():
    rng = np.random.default_rng(3)
    y_true = rng.choice(["e", "n", "c"], size=200)
    strong = y_true.copy()
    strong[:10] = np.where(y_true[:10] == "e", "n", "e")  # 95% right
    weak = np.where(rng.random(200) < 0.6, y_true, "x")  # about 60% right
    return y_true, strong, weak


def test_paired_bootstrap_identical_systems_p_is_one():
    y_true, strong, _ = _two_systems()
    out = stats.paired_bootstrap(y_true, strong, strong.copy(), n_resamples=500)
    assert out == {"delta": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_clearly_better_system_has_small_p():
    y_true, strong, weak = _two_systems()
    out = stats.paired_bootstrap(y_true, strong, weak, n_resamples=1000, seed=0)
    assert out["delta"] == pytest.approx(stats.accuracy(y_true, strong) - stats.accuracy(y_true, weak))
    assert out["delta"] > 0.25
    assert 0 < out["low"] < out["delta"] < out["high"]
    # no resample flips the sign: p is the floor 2 / (R + 1)
    assert out["p_value"] == pytest.approx(2 / 1001)
    reversed_ = stats.paired_bootstrap(y_true, weak, strong, n_resamples=1000, seed=0)
    assert reversed_["delta"] == pytest.approx(-out["delta"])
    assert reversed_["p_value"] == pytest.approx(out["p_value"])


def test_mcnemar_identical_predictors():
    y_true, strong, _ = _two_systems()
    assert stats.mcnemar(y_true, strong, strong) == {
        "b": 0,
        "c": 0,
        "statistic": 0.0,
        "p_value": 1.0,
        "method": "exact",
    }


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    y_true = ["e"] * 20
    a = ["e"] * 20
    b = ["n"] * 10 + ["e"] * 10  # a right / b wrong on 10 items, never the reverse
    out = stats.mcnemar(y_true, a, b)
    assert (out["b"], out["c"], out["method"]) == (10, 0, "exact")
    assert out["p_value"] == pytest.approx(2 * 0.5**10)


def test_mcnemar_chi_square_with_continuity_correction():
    y_true = ["e"] * 50
    a = ["e"] * 30 + ["n"] * 10 + ["e"] * 10
    b = ["n"] * 30 + ["e"] * 10 + ["e"] * 10
    out = stats.mcnemar(y_true, a, b)
    assert (out["b"], out["c"], out["method"]) == (30, 10, "chi2")
    assert out["statistic"] == pytest.approx((20 - 1) ** 2 / 40)  # 9.025
    # chi-square(1) survival function is erfc(sqrt(x / 2))
    assert out["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert out["p_value"] == pytest.approx(0.00266, abs=5e-5)


def test_seed_mean_ci_t_interval():
    mean, low, high = stats.seed_mean_ci([0.70, 0.72, 0.74])
    # sd = 0.02, t_{0.975, 2} = 4.302653, half width = 4.302653 * 0.02 / sqrt(3) = 0.049683
    assert mean == pytest.approx(0.72)
    assert low == pytest.approx(0.72 - 0.049683, abs=1e-6)
    assert high == pytest.approx(0.72 + 0.049683, abs=1e-6)
    assert stats.seed_mean_ci([0.5]) == (0.5, 0.5, 0.5)


# --- prompt robustness ---------------------------------------------------------------------


def test_flip_rate_overall_and_per_class():
    a = ["e", "e", "e", "e", "n", "n", "c", "c"]
    b = ["e", "n", "e", "c", "n", "n", "e", None]
    out = stats.flip_rate(a, b)
    assert out["n"] == 7
    assert out["overall"] == pytest.approx(3 / 7)
    assert out["by_class"] == pytest.approx({"e": 0.5, "n": 0.0, "c": 1.0})
    assert out["n_by_class"] == {"e": 4, "n": 2, "c": 1}
    gold = ["x", "x", "y", "y", "y", "y", "y", "x"]
    by_gold = stats.flip_rate(a, b, by=gold)
    assert by_gold["by_class"] == pytest.approx({"x": 0.5, "y": 0.4})


def test_two_level_resamples_from_counts_equal_the_drawn_rows_and_items():
    """The bootstrap computes each resample's mean from how often each seed and item was drawn; that
    must equal the mean of the drawn seeds' rows on the drawn items, element by element."""
    import numpy as np

    from synthllm.stats import _resampled_means

    rng = np.random.default_rng(3)
    matrix = (rng.random((3, 40)) < 0.7).astype(float)
    items, seeds = rng.integers(0, 40, (25, 40)), rng.integers(0, 3, (25, 3))
    item_counts = np.stack([np.bincount(r, minlength=40) for r in items]).astype(float)
    seed_counts = np.stack([np.bincount(r, minlength=3) for r in seeds]).astype(float)
    direct = [matrix[s][:, i].mean() for s, i in zip(seeds, items)]
    np.testing.assert_allclose(_resampled_means(matrix, item_counts, seed_counts), direct, rtol=0, atol=1e-15)
