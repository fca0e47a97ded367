"""The results tables: annotator × regime, mean over seeds with confidence intervals.

Two intervals per cell: a t-interval over seeds (training variability alone), and a two-level
percentile bootstrap over seeds *and* test items (:func:`synthllm.stats.two_level_bootstrap`), which
covers both. Regimes are compared pairwise within an annotator by the two-level bootstrap of the
accuracy difference (items paired, seeds drawn separately per regime); its p-values over the whole
family of comparisons in the report are Holm–Bonferroni adjusted, and a difference is marked
significant when the adjusted p is at most 0.05 (the raw p is kept). McNemar's test is shown for
every seed, seeds paired in numeric order. The caller passes exactly the configured runs; this
module does not read files or decide what is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from synthllm import stats

COMPARISONS = (
    ("warmup", "mix"),
    ("warmup", "reversed"),
    ("warmup", "gold_only"),
    ("warmup", "synthetic_only"),
    ("mix", "gold_only"),
    ("reversed", "gold_only"),
)


def item_correctness(predictions: pd.DataFrame) -> pd.Series:
    """Per test item, the share of seeds that got it right."""
    return (predictions["label"] == predictions["predicted"]).groupby(predictions["id"]).mean().sort_index()


def seed_number(seed: str) -> int:
    """'seed-10' -> 10 (seeds sort numerically, not as strings)."""
    return int(str(seed).rsplit("-", 1)[-1])


def correctness_matrix(predictions: pd.DataFrame) -> np.ndarray:
    """Seeds (numeric order) × test items (sorted by id) 0/1 correctness."""
    right = (predictions["label"] == predictions["predicted"]).astype(float)
    wide = right.groupby([predictions["seed"], predictions["id"]]).first().unstack("id").sort_index(axis=1)
    return wide.loc[sorted(wide.index, key=seed_number)].to_numpy()


def macro_f1_ci(
    predictions: pd.DataFrame, labels, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap over test items of the seed-averaged macro-F1 (every seed's predictions
    resampled with the same items), vectorised: the resamples × items index matrix is built once."""
    wide = predictions.pivot(index="id", columns="seed", values="predicted").sort_index()
    gold = predictions.drop_duplicates("id").set_index("id")["label"].sort_index()
    code = {lab: i for i, lab in enumerate(labels)}
    y = gold.map(code).to_numpy()
    p = wide.apply(lambda col: col.map(code)).to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_resamples, len(y)))
    ys = y[idx]
    per_seed = []
    for k in range(p.shape[1]):
        ps = p[:, k][idx]
        f1 = []
        for c in range(len(labels)):
            tp = ((ys == c) & (ps == c)).sum(1)
            denom = (ys == c).sum(1) + (ps == c).sum(1)
            f1.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
        per_seed.append(np.mean(f1, axis=0))
    values = np.mean(per_seed, axis=0)
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _subset_acc(seeds: Mapping[str, dict], subset: str) -> float:
    """Mean accuracy on a hard subset; NaN where the gold test set has no such flag."""
    values = [s[subset]["accuracy"] for s in seeds.values() if subset in s]
    return float(np.mean(values)) if values else float("nan")


def results_table(
    metrics: Mapping[str, dict],
    predictions: Mapping[str, pd.DataFrame],
    labels: Sequence[str],
    seed: int = 0,
    n_resamples: int = 2000,
) -> pd.DataFrame:
    rows = []
    for run, m in sorted(metrics.items()):
        annotator, regime = run.split("__")
        seeds = m["seeds"]
        acc = [s["all"]["accuracy"] for s in seeds.values()]
        mean, lo, hi = stats.seed_mean_ci(acc)
        boot = stats.two_level_bootstrap(correctness_matrix(predictions[run]), n_resamples=n_resamples, seed=seed)
        rows.append(
            {
                "annotator": annotator,
                "regime": regime,
                "seeds": len(acc),
                "accuracy": mean,
                "acc_seed_ci_low": lo,
                "acc_seed_ci_high": hi,
                "acc_boot_ci_low": boot["low"],
                "acc_boot_ci_high": boot["high"],
                "macro_f1": float(np.mean([s["all"]["macro_f1"] for s in seeds.values()])),
                **dict(zip(("f1_boot_ci_low", "f1_boot_ci_high"), macro_f1_ci(predictions[run], labels, seed=seed))),
                "hard_hypothesis_acc": _subset_acc(seeds, "hard_hypothesis"),
                "hard_overlap_acc": _subset_acc(seeds, "hard_overlap"),
            }
        )
    return pd.DataFrame(rows)


def mcnemar_per_seed(a: pd.DataFrame, b: pd.DataFrame) -> dict[int, float]:
    """McNemar's p for each seed both runs have, seeds paired by number."""
    out: dict[int, float] = {}
    for seed in sorted(set(a["seed"]) & set(b["seed"]), key=seed_number):
        x, y = (df[df["seed"] == seed].sort_values("id") for df in (a, b))
        out[seed_number(seed)] = float(
            stats.mcnemar(x["label"].to_numpy(), x["predicted"].to_numpy(), y["predicted"].to_numpy())["p_value"]
        )
    return out


COMPARISON_COLUMNS = [
    "annotator",
    "a",
    "b",
    "delta_accuracy",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "significant",
    "mcnemar_p_by_seed",
]


def regime_comparisons(
    predictions: Mapping[str, pd.DataFrame], seed: int = 0, n_resamples: int = 2000, alpha: float = 0.05
) -> pd.DataFrame:
    """Two-level bootstrap of the accuracy difference between regimes of one annotator, Holm
    adjusted over every comparison returned, with McNemar's test per seed beside it."""
    by_annotator: dict[str, dict[str, pd.DataFrame]] = {}
    gold_only = next((p for r, p in predictions.items() if r.endswith("__gold_only")), None)
    for run, preds in predictions.items():
        annotator, regime = run.split("__")
        if regime != "gold_only":
            by_annotator.setdefault(annotator, {} if gold_only is None else {"gold_only": gold_only})
            by_annotator[annotator][regime] = preds
    rows = []
    for annotator, regimes in sorted(by_annotator.items()):
        for a, b in COMPARISONS:
            if a not in regimes or b not in regimes:
                continue
            boot = stats.two_level_bootstrap(
                correctness_matrix(regimes[a]), n_resamples=n_resamples, seed=seed, other=correctness_matrix(regimes[b])
            )
            mc = mcnemar_per_seed(regimes[a], regimes[b])
            rows.append(
                {
                    "annotator": annotator,
                    "a": a,
                    "b": b,
                    "delta_accuracy": boot["estimate"],
                    "ci_low": boot["low"],
                    "ci_high": boot["high"],
                    "p_value": boot["p_value"],
                    "mcnemar_p_by_seed": "; ".join(f"{k}: {v:.3g}" for k, v in mc.items()),
                }
            )
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_holm", "significant")])
    table.insert(7, "p_holm", stats.holm(table["p_value"].tolist()) if len(table) else [])
    table.insert(8, "significant", table["p_holm"] <= alpha)
    return table[COMPARISON_COLUMNS]


AGGREGATE_COLUMNS = [
    "aggregate",
    "members",
    "method",
    "configured",
    "accuracy",
    "ci_low",
    "ci_high",
    "macro_f1",
    "ece",
    "coverage",
    "best_member",
    "best_member_accuracy",
    "unavailable",
]


def aggregates_table(
    annotators: Mapping[str, dict], aggregates: Sequence[str], results: pd.DataFrame, regimes: Sequence[str]
) -> pd.DataFrame:
    """One row per aggregate × vote method (the aggregate stage's comparison): out-of-fold audit
    accuracy with its bootstrap CI, macro-F1, ECE, pool coverage, the best member beside it, and,
    for the configured method of an aggregate that is a branch, the test accuracy of each regime."""
    rows = []
    for name in aggregates:
        agg = annotators[name]["aggregate"]
        best = max(agg["members"], key=lambda m: agg["members"][m])
        for method, m in agg["methods"].items():
            row = {
                "aggregate": name,
                "members": ", ".join(agg["members"]),
                "method": method,
                "configured": method == agg["method"],
                "best_member": best,
                "best_member_accuracy": agg["members"][best],
                "unavailable": m.get("unavailable"),
            }
            if "accuracy" in m:
                row.update(
                    accuracy=m["accuracy"],
                    ci_low=m["accuracy_ci"][0],
                    ci_high=m["accuracy_ci"][1],
                    macro_f1=m["macro_f1"],
                    ece=m["ece"],
                    coverage=m["coverage"],
                )
            trained = results[results["annotator"] == name].set_index("regime")["accuracy"]
            for regime in regimes:
                row[f"test_{regime}"] = trained.get(regime) if row["configured"] else None
            rows.append(row)
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS + [f"test_{r}" for r in regimes])
