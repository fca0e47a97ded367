"""Agreement, calibration and uncertainty statistics for annotators and classifiers.

Everything here is a pure function of label sequences or numbers: agreement (Cohen's and Fleiss'
kappa, confusion matrices), label shares, calibration error, bootstrap and t confidence intervals,
paired significance tests (paired bootstrap, McNemar) and prompt-variant flip rates (votes
are :mod:`synthllm.aggregation`). A missing label is ``None`` (or a float NaN, as pandas writes it).

This module deliberately does not read or write files, does not know the NLI label set (callers
pass ``categories``) and does not draw global random state (every resampling function takes a seed).
Family-wise correction is :func:`holm`, applied by the caller to the family it reports.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score
from typing_extensions import TypeIs

Label = str
MaybeLabel = str | None
MetricFn = Callable[..., float]  # (y_true, y_pred) label arrays -> a corpus-level score

# Below this many discordant pairs the chi-square approximation to McNemar's test is poor; the
# usual textbook threshold (e.g. Agresti) switches to the exact binomial test.
MCNEMAR_EXACT_BELOW = 25
# Stands in for an abstention inside sklearn metrics, which reject mixed str/None label arrays.
_MISSING = "\x00missing"


def is_missing(value: object) -> TypeIs[float | None]:
    """True for ``None`` and float NaN (pandas' missing value in object columns)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _complete_pairs(a: Sequence[MaybeLabel], b: Sequence[MaybeLabel]) -> tuple[list[Label], list[Label]]:
    if len(a) != len(b):
        raise ValueError(f"label sequences differ in length: {len(a)} vs {len(b)}")
    kept = [(x, y) for x, y in zip(a, b) if not is_missing(x) and not is_missing(y)]
    return [x for x, _ in kept], [y for _, y in kept]


# --- agreement -------------------------------------------------------------------------------


def cohen_kappa(a: Sequence[MaybeLabel], b: Sequence[MaybeLabel], labels: Sequence[Label] | None = None) -> float:
    """Cohen's kappa between two annotators over the items both labelled.

    Pairs where either label is missing are dropped. Returns NaN when kappa is undefined (both
    annotators used a single, identical label everywhere: chance agreement is 1).
    """
    x, y = _complete_pairs(a, b)
    if not x:
        raise ValueError("no item was labelled by both annotators")
    return float(cohen_kappa_score(x, y, labels=None if labels is None else list(labels)))


def pairwise_kappa(labels: Mapping[str, Sequence[MaybeLabel]]) -> dict[tuple[str, str], float]:
    """Cohen's kappa for every unordered pair of annotators, keyed in the dict's order."""
    return {(p, q): cohen_kappa(labels[p], labels[q]) for p, q in combinations(labels, 2)}


def fleiss_kappa(ratings: Sequence[Sequence[MaybeLabel]], categories: Sequence[Label]) -> float:
    """Fleiss' kappa for an items x raters table of labels.

    Items with any missing label are dropped, because the standard formula needs the same number
    of raters on every item. Returns NaN when chance agreement is 1 (every label is one category).
    """
    index = {c: j for j, c in enumerate(categories)}
    complete = [row for row in ratings if not any(is_missing(v) for v in row)]
    if not complete:
        raise ValueError("no item has a label from every rater")
    n_raters = len(complete[0])
    if n_raters < 2 or any(len(row) != n_raters for row in complete):
        raise ValueError("every item needs the same number of raters, at least 2")
    counts = np.zeros((len(complete), len(categories)))
    for i, row in enumerate(complete):
        for value in row:
            if value not in index:
                raise ValueError(f"label {value!r} is not one of the categories {list(categories)}")
            counts[i, index[value]] += 1

    n_items = counts.shape[0]
    p_category = counts.sum(axis=0) / (n_items * n_raters)
    p_item = ((counts**2).sum(axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar, p_e = p_item.mean(), float((p_category**2).sum())
    if math.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def confusion(a: Sequence[MaybeLabel], b: Sequence[MaybeLabel], labels: Sequence[Label]) -> list[list[int]]:
    """Counts with rows = ``a`` (e.g. gold), columns = ``b``, in ``labels`` order; missing pairs dropped."""
    x, y = _complete_pairs(a, b)
    if not x:
        return [[0] * len(labels) for _ in labels]
    return confusion_matrix(x, y, labels=list(labels)).tolist()


def annotator_confusion(
    labels: dict[str, Sequence[MaybeLabel]], first: str, second: str, categories: Sequence[Label]
) -> dict[str, Any]:
    """Confusion between two named annotators, self-describing so it can be written as a plot file."""
    return {
        "rows": first,
        "columns": second,
        "labels": list(categories),
        "matrix": confusion(labels[first], labels[second], categories),
    }


def label_distribution(labels: Sequence[MaybeLabel], categories: Sequence[Label]) -> dict[str, float]:
    """Share of each category among the non-missing labels (all zeros if none is present)."""
    present = [v for v in labels if not is_missing(v)]
    unknown = sorted({v for v in present if v not in categories})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the categories {list(categories)}")
    counts = Counter(present)
    total = len(present)
    return {c: (counts[c] / total if total else 0.0) for c in categories}


# --- calibration -----------------------------------------------------------------------------


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool | int], n_bins: int = 10) -> float:
    """Standard ECE: sum over equal-width bins of (bin share) * |accuracy - mean confidence|.

    Bins are right-closed, (k/n, (k+1)/n], with confidence 0 put in the first bin.
    """
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError("confidences and correct must be 1-D and of equal length")
    if conf.size == 0:
        raise ValueError("no predictions to calibrate")
    if np.any((conf < 0) | (conf > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    ece = 0.0
    for k in range(n_bins):
        in_bin = bins == k
        if in_bin.any():
            ece += in_bin.mean() * abs(hit[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


# --- uncertainty -----------------------------------------------------------------------------


def accuracy(y_true: Sequence[MaybeLabel], y_pred: Sequence[MaybeLabel]) -> float:
    """Share of exact matches; a missing prediction counts as wrong."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return float(np.mean(t == p))


def macro_f1(
    y_true: Sequence[MaybeLabel], y_pred: Sequence[MaybeLabel], labels: Sequence[Label] | None = None
) -> float:
    """Macro-F1 over ``labels`` (default: the gold labels present); a missing prediction counts as wrong."""
    t = [_MISSING if is_missing(v) else v for v in y_true]
    p = [_MISSING if is_missing(v) else v for v in y_pred]
    # Averaging over gold labels only keeps abstentions from becoming a zero-F1 pseudo-class.
    classes = sorted({v for v in t if v != _MISSING}) if labels is None else list(labels)
    return float(f1_score(t, p, labels=classes, average="macro", zero_division=0))


def _resamples(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float],
    metric: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap over per-item scores (e.g. 0/1 correctness)."""
    x = np.asarray(values, dtype=float)
    draws = np.array([metric(x[idx]) for idx in _resamples(len(x), n_resamples, seed)])
    return (float(metric(x)), *_percentiles(draws, alpha))


def bootstrap_metric_ci(
    y_true: Sequence[MaybeLabel],
    y_pred: Sequence[MaybeLabel],
    metric_fn: MetricFn = macro_f1,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) for a corpus-level metric such as macro-F1, resampling items (pairs)."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    draws = np.array([metric_fn(t[idx], p[idx]) for idx in _resamples(len(t), n_resamples, seed)])
    return (float(metric_fn(t, p)), *_percentiles(draws, alpha))


def paired_bootstrap(
    y_true: Sequence[MaybeLabel],
    pred_a: Sequence[MaybeLabel],
    pred_b: Sequence[MaybeLabel],
    metric_fn: MetricFn = accuracy,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of delta = metric(a) - metric(b), both systems scored on the same resamples.

    ``p_value`` is two-sided: twice the smaller share of resampled deltas at or below zero and at
    or above zero, with the +1 correction ((k + 1) / (R + 1)) so it is never exactly 0, capped at 1.
    Identical systems (every delta 0) therefore get p = 1.
    """
    t = np.asarray(y_true, dtype=object)
    a, b = np.asarray(pred_a, dtype=object), np.asarray(pred_b, dtype=object)
    if not (t.shape == a.shape == b.shape):
        raise ValueError("y_true, pred_a and pred_b differ in length")
    deltas = np.array(
        [metric_fn(t[idx], a[idx]) - metric_fn(t[idx], b[idx]) for idx in _resamples(len(t), n_resamples, seed)]
    )
    tail = min(int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0)))
    low, high = _percentiles(deltas, alpha)
    return {
        "delta": float(metric_fn(t, a) - metric_fn(t, b)),
        "low": low,
        "high": high,
        "p_value": min(1.0, 2 * (tail + 1) / (n_resamples + 1)),
    }


def mcnemar(
    y_true: Sequence[MaybeLabel], pred_a: Sequence[MaybeLabel], pred_b: Sequence[MaybeLabel]
) -> dict[str, float | int | str]:
    """McNemar's test on the items exactly one system gets right.

    ``b`` = a right and b wrong, ``c`` = a wrong and b right. With b + c < 25 it is the exact
    two-sided binomial test (statistic = min(b, c)); otherwise chi-square with continuity
    correction, (|b - c| - 1)^2 / (b + c), on 1 degree of freedom. Missing predictions are wrong.
    """
    t = np.asarray(y_true, dtype=object)
    a_right = np.asarray(pred_a, dtype=object) == t
    b_right = np.asarray(pred_b, dtype=object) == t
    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    if b + c == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if b + c < MCNEMAR_EXACT_BELOW:
        p = sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": float(p), "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "statistic": float(statistic),
        "p_value": float(sps.chi2.sf(statistic, df=1)),
        "method": "chi2",
    }


def two_level_bootstrap(
    correct: np.ndarray,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    other: np.ndarray | None = None,
) -> dict[str, float]:
    """Bootstrap over training seeds *and* test items of a seeds × items 0/1 correctness matrix.

    Each resample draws seeds with replacement and, independently, items with replacement, and takes
    the mean correctness of the drawn seeds on the drawn items — so the interval covers both the
    run-to-run variance of training and the sampling variance of the test set (an item-only
    bootstrap of seed-averaged correctness ignores the first). With ``other`` (a second system's
    matrix on the same items, possibly another number of seeds) it resamples the difference
    ``mean(correct) - mean(other)``: items are drawn once for both (paired), seeds separately for
    each (different training runs). Returns ``estimate``, ``low``, ``high`` and, for a difference, a
    two-sided ``p_value`` as in :func:`paired_bootstrap`.
    """
    a = np.asarray(correct, dtype=float)
    if a.ndim != 2 or a.size == 0:
        raise ValueError("correct must be a non-empty seeds × items matrix")
    b = None if other is None else np.asarray(other, dtype=float)
    if b is not None and (b.ndim != 2 or b.shape[1] != a.shape[1]):
        raise ValueError("other must be a seeds × items matrix over the same items")
    rng = np.random.default_rng(seed)
    # every resample at once, as how often each item and each seed is drawn: the mean of the drawn
    # seeds' rows on the drawn items is (seed counts) @ matrix @ (item counts) / (seeds × items)
    # (2,000 resamples as a Python loop took 19 s of the report stage's 36)
    items = _draw_counts(rng, n_resamples, a.shape[1])
    draws = _resampled_means(a, items, _draw_counts(rng, n_resamples, a.shape[0]))
    if b is not None:
        draws -= _resampled_means(b, items, _draw_counts(rng, n_resamples, b.shape[0]))
    estimate = float(a.mean() - (b.mean() if b is not None else 0.0))
    low, high = _percentiles(draws, alpha)
    out = {"estimate": estimate, "low": low, "high": high}
    if b is not None:
        tail = min(int(np.sum(draws <= 0)), int(np.sum(draws >= 0)))
        out["p_value"] = min(1.0, 2 * (tail + 1) / (n_resamples + 1))
    return out


def _draw_counts(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """resamples × n: how often each of n things is drawn in n draws with replacement."""
    drawn = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def _resampled_means(matrix: np.ndarray, item_counts: np.ndarray, seed_counts: np.ndarray) -> np.ndarray:
    seeds, items = matrix.shape
    return np.einsum("rs,rs->r", item_counts @ matrix.T, seed_counts) / (seeds * items)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control), in the input order.

    Sorted ascending, the k-th smallest (k from 0) becomes ``min(1, (m - k) * p)``, made
    non-decreasing along the sorted order; reject at level alpha where the adjusted p <= alpha.
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def seed_mean_ci(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval over per-seed results; one seed gives (v, v, v)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no seed results")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = sps.t.ppf(1 - alpha / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return mean, float(mean - half), float(mean + half)


# --- prompt robustness ---------------------------------------------------------------------


def flip_rate(
    labels_a: Sequence[MaybeLabel],
    labels_b: Sequence[MaybeLabel],
    by: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Share of items whose label differs between prompt variants a and b, overall and per class.

    Classes come from ``by`` (default: the label under variant a). Items missing a label under
    either variant are dropped, since an abstention is not a change of mind.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError("label sequences differ in length")
    groups = list(labels_a) if by is None else list(by)
    if len(groups) != len(labels_a):
        raise ValueError("'by' must have one entry per item")
    flips: dict[Hashable, list[bool]] = {}
    all_flips: list[bool] = []
    for x, y, g in zip(labels_a, labels_b, groups):
        if is_missing(x) or is_missing(y):
            continue
        all_flips.append(x != y)
        flips.setdefault(g, []).append(x != y)
    return {
        "overall": float(np.mean(all_flips)) if all_flips else float("nan"),
        "n": len(all_flips),
        "by_class": {g: float(np.mean(v)) for g, v in flips.items()},
        "n_by_class": {g: len(v) for g, v in flips.items()},
    }
