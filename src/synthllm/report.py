"""The results table and charts: annotator × regime, mean over seeds with confidence intervals.

Two intervals per cell: a t-interval over seeds (training variability) and a percentile bootstrap
over test items of the seed-averaged correctness (test-set sampling). Regimes are compared pairwise
within an annotator by a paired bootstrap over test items; a difference is marked significant when
its 95 % interval excludes zero, and McNemar's test on the first seed's predictions is shown beside
it. No correction for multiple comparisons is applied (say so when quoting many of them). This
module does not read files.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from synthllm import stats
from synthllm.generation import label_codes
from synthllm.params import NLI_LABELS

COMPARISONS = (("warmup", "mix"), ("warmup", "reversed"), ("warmup", "gold_only"),
               ("warmup", "synthetic_only"), ("mix", "gold_only"), ("reversed", "gold_only"))


def item_correctness(predictions: pd.DataFrame) -> pd.Series:
    """Per test item, the share of seeds that got it right."""
    return (predictions["label"] == predictions["predicted"]).groupby(predictions["id"]).mean().sort_index()


def macro_f1_ci(predictions: pd.DataFrame, labels, n_resamples: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> tuple[float, float]:
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


def results_table(metrics: Mapping[str, dict], predictions: Mapping[str, pd.DataFrame],
                  seed: int = 0, n_resamples: int = 2000,
                  labels: Sequence[str] = NLI_LABELS) -> pd.DataFrame:
    rows = []
    for run, m in sorted(metrics.items()):
        annotator, regime = run.split("__")
        seeds = m["seeds"]
        acc = [s["all"]["accuracy"] for s in seeds.values()]
        mean, lo, hi = stats.seed_mean_ci(acc)
        point, blo, bhi = stats.bootstrap_ci(item_correctness(predictions[run]).to_numpy(),
                                             n_resamples=n_resamples, seed=seed)
        rows.append({
            "annotator": annotator, "regime": regime, "seeds": len(acc),
            "accuracy": mean, "acc_seed_ci_low": lo, "acc_seed_ci_high": hi,
            "acc_boot_ci_low": blo, "acc_boot_ci_high": bhi,
            "macro_f1": float(np.mean([s["all"]["macro_f1"] for s in seeds.values()])),
            **dict(zip(("f1_boot_ci_low", "f1_boot_ci_high"),
                       macro_f1_ci(predictions[run], labels, seed=seed))),
            "hard_hypothesis_acc": _subset_acc(seeds, "hard_hypothesis"),
            "hard_overlap_acc": _subset_acc(seeds, "hard_overlap"),
        })
    return pd.DataFrame(rows)


def _first_seed(predictions: pd.DataFrame) -> pd.DataFrame:
    first = sorted(predictions["seed"].unique())[0]
    return predictions[predictions["seed"] == first].sort_values("id")


def regime_comparisons(predictions: Mapping[str, pd.DataFrame], seed: int = 0,
                       n_resamples: int = 2000) -> pd.DataFrame:
    """Paired bootstrap of seed-averaged per-item correctness between regimes of one annotator,
    and, as a second opinion, McNemar's test on the first seed's predictions."""
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
            diff = (item_correctness(regimes[a]) - item_correctness(regimes[b])).to_numpy()
            delta, lo, hi = stats.bootstrap_ci(diff, n_resamples=n_resamples, seed=seed)
            first_a, first_b = _first_seed(regimes[a]), _first_seed(regimes[b])
            mcnemar = stats.mcnemar(first_a["label"].to_numpy(), first_a["predicted"].to_numpy(),
                                    first_b["predicted"].to_numpy())
            rows.append({"annotator": annotator, "a": a, "b": b, "delta_accuracy": delta,
                         "ci_low": lo, "ci_high": hi, "significant": bool(lo > 0 or hi < 0),
                         "mcnemar_p_first_seed": mcnemar["p_value"]})
    return pd.DataFrame(rows, columns=["annotator", "a", "b", "delta_accuracy", "ci_low", "ci_high",
                                       "significant", "mcnemar_p_first_seed"])


def markdown(table: pd.DataFrame, comparisons: pd.DataFrame, annotators: Mapping[str, dict],
             quality: Mapping | None = None, strategy: str = "natural",
             labels: Sequence[str] = NLI_LABELS, gold_name: str = "FarsTail") -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    codes = "/".join(label_codes(labels)[lab] for lab in labels)
    lines = ["# SynthLLM results", "", "## Annotators (gold-val audit sample)", "",
             f"| annotator | audit n | accuracy | macro-F1 | ECE | failed (pool) | pool labels {codes} |",
             "|---|---|---|---|---|---|---|"]
    for name, m in sorted(annotators.items()):
        a, pool = m["audit"], m["pool"]
        dist = "/".join(pct(pool["label_distribution"].get(l) or 0) for l in labels)
        ece = "–" if a.get("ece") is None else f"{a['ece']:.3f}"
        lines.append(f"| {name} | {a['n']} | {pct(a['accuracy'])} | {pct(a['macro_f1'])} | {ece} | "
                     f"{pool['failed']}/{pool['n']} | {dist} |")
    for name, m in sorted(annotators.items()):
        flips = m["pool"].get("prompt_order_flip_rate")
        if flips:
            per_class = ", ".join(f"{k} {pct(v)}" for k, v in sorted(flips["by_class"].items()))
            lines.append(f"\nPrompt-order flip rate of {name} (hypothesis first): {pct(flips['overall'])} % "
                         f"({per_class}).")
    if quality and "pairwise_kappa" in quality:
        lines += ["", "Agreement on the synthetic pool: " + ", ".join(
            f"κ({k.replace('__', ', ')}) = {v:.3f}" for k, v in sorted(quality["pairwise_kappa"].items()))
            + (f"; Fleiss' κ = {quality['fleiss_kappa']:.3f}" if quality.get("fleiss_kappa") is not None else "")
            + "."]
        vote = quality.get("vote_on_audit")
        if vote:
            lines.append(f"Majority vote of {', '.join(vote['members'])} on the audit sample: "
                         f"{pct(vote['majority_accuracy'])} % (confidence-weighted: "
                         f"{pct(vote['weighted_majority_accuracy'])} %).")
    hard = bool(table["hard_hypothesis_acc"].notna().any()) if len(table) else False
    lines += ["", f"## Test accuracy by annotator × regime ({gold_name} test, %)", "",
              "Mean over seeds; [t-interval over seeds]; {bootstrap 95 % CI over test items}. "
              f"Synthetic label distribution (split.strategy): {strategy}.", "",
              "| annotator | strategy | regime | seeds | accuracy | seed CI | item CI | macro-F1 | macro-F1 item CI |"
              + (" hard-hyp | hard-overlap |" if hard else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if hard else "")]
    for r in table.itertuples():
        shown = "–" if r.regime == "gold_only" else strategy
        lines.append(f"| {r.annotator} | {shown} | {r.regime} | {r.seeds} | {pct(r.accuracy)} | "
                     f"[{pct(r.acc_seed_ci_low)}, {pct(r.acc_seed_ci_high)}] | "
                     f"{{{pct(r.acc_boot_ci_low)}, {pct(r.acc_boot_ci_high)}}} | {pct(r.macro_f1)} | "
                     f"{{{pct(r.f1_boot_ci_low)}, {pct(r.f1_boot_ci_high)}}} |"
                     + (f" {pct(r.hard_hypothesis_acc)} | {pct(r.hard_overlap_acc)} |" if hard else ""))
    lines += ["", "## Regime comparisons (paired bootstrap over test items, 95 % CI)", "",
              "| annotator | a | b | Δ accuracy (a − b) | CI | significant | McNemar p (first seed) |",
              "|---|---|---|---|---|---|---|"]
    for c in comparisons.itertuples():
        lines.append(f"| {c.annotator} | {c.a} | {c.b} | {pct(c.delta_accuracy)} | "
                     f"[{pct(c.ci_low)}, {pct(c.ci_high)}] | {'**yes**' if c.significant else 'no'} | "
                     f"{c.mcnemar_p_first_seed:.3g} |")
    return "\n".join(lines) + "\n"


def regime_chart(table: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [r for r in ("gold_only", "synthetic_only", "warmup", "mix", "reversed") if r in set(table.regime)]
    annotators = sorted(set(table.annotator) - {"gold"})
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(regimes), 4))
    width = 0.8 / max(1, len(annotators))
    gold = table[table.regime == "gold_only"]
    if not gold.empty:
        g = gold.iloc[0]
        ax.axhspan(100 * g.acc_boot_ci_low, 100 * g.acc_boot_ci_high, color="0.85", label="gold_only (CI)")
        ax.axhline(100 * g.accuracy, color="0.4", lw=1)
    for k, ann in enumerate(annotators):
        sub = table[table.annotator == ann].set_index("regime").reindex([r for r in regimes if r != "gold_only"])
        x = np.arange(len(sub)) + k * width
        err = np.vstack([sub.accuracy - sub.acc_boot_ci_low, sub.acc_boot_ci_high - sub.accuracy]) * 100
        ax.bar(x, 100 * sub.accuracy, width, yerr=err, capsize=3, label=ann)
    ax.set_xticks(np.arange(len(regimes) - (not gold.empty)) + width * (len(annotators) - 1) / 2)
    ax.set_xticklabels([r for r in regimes if r != "gold_only"])
    ax.set_ylabel("FarsTail test accuracy (%)")
    ax.set_ylim(30, max(80, 100 * table.accuracy.max() + 5))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Regimes by annotator (mean over seeds, bootstrap 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
