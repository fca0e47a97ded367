"""Charts of annotation quality, drawn from the metrics the annotate stage writes.

Each function takes already-loaded metrics (plain dicts), writes one PNG and returns its path. Figures
are built on :class:`matplotlib.figure.Figure` with the Agg canvas rather than through pyplot, so
calling them never switches the global backend (a notebook's inline display keeps working) and
never leaves figures open. This module deliberately does not read metrics files, compute statistics
or decide which annotators to show: callers pass exactly what should be drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def annotator_confusion_heatmaps(
    annotator_metrics: Mapping[str, dict], path: str | Path, labels: Sequence[str]
) -> Path:
    """One heatmap per annotator of its gold-val audit: gold labels as rows, its labels as columns
    (an annotator without audit rows, an intended one, has no heatmap)."""
    names = sorted(n for n in annotator_metrics if annotator_metrics[n]["audit"].get("confusion") is not None)
    fig = Figure(figsize=(3.6 * max(1, len(names)), 3.6))
    for k, name in enumerate(names, 1):
        audit = annotator_metrics[name]["audit"]
        counts = np.asarray(audit["confusion"])
        ax = fig.add_subplot(1, len(names), k)
        ax.imshow(counts, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > counts.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8, rotation=90, va="center")
        ax.set_xlabel(f"{name} label")
        ax.set_ylabel("gold label")
        ax.set_title(f"{name}: audit acc {100 * (audit.get('accuracy') or 0):.1f} %", fontsize=10)
    return _save(fig, path)


def label_distributions(
    annotator_metrics: Mapping[str, dict],
    gold_shares: Mapping[str, float],
    path: str | Path,
    labels: Sequence[str],
    gold_name: str = "FarsTail",
) -> Path:
    """Grouped bars: each annotator's label shares on the synthetic pool, beside gold's shares."""
    groups = {name: m["pool"]["label_distribution"] for name, m in sorted(annotator_metrics.items())}
    if gold_shares:
        groups[f"gold ({gold_name} train)"] = dict(gold_shares)
    fig = Figure(figsize=(2 + 1.8 * len(labels), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(labels))
    for k, (name, shares) in enumerate(groups.items()):
        ax.bar(x + k * width, [100 * (shares.get(lab) or 0) for lab in labels], width, label=name)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, list(labels))
    ax.set_ylabel("share of pairs (%)")
    ax.set_title("Label distribution: annotators on the synthetic pool vs gold")
    ax.legend(fontsize=8)
    return _save(fig, path)


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


def curve_chart(table: pd.DataFrame, annotator: str, path, x: str = "budget") -> None:
    """One PNG: accuracy against ``x`` for each regime of one branch (gold_only drawn in each)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sub = table[(table["annotator"] == annotator) | (table["regime"] == "gold_only")]
    for regime, g in sub.groupby("regime", sort=True):
        g = g.sort_values(x)
        ax.plot(g[x], 100 * g["accuracy"], marker="o", label=regime)
        ax.fill_between(g[x], 100 * g["ci_low"], 100 * g["ci_high"], alpha=0.15)
    if x == "budget":
        ax.set_xscale("log")
    ax.set_xlabel("gold train pairs" if x == "budget" else "share of the synthetic pool")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{annotator} labels: accuracy vs {'gold budget' if x == 'budget' else 'pool fraction'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def frontier_chart(table: pd.DataFrame, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    use_usd = bool((table["usd_per_1000"] > 0).any())
    x = "usd_per_1000" if use_usd else "seconds_per_1000"
    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, marker in (("single", "o"), ("vote", "s")):
        sub = table[(table["kind"] == kind) & table[x].notna()]
        ax.scatter(sub[x], 100 * sub["audit_accuracy"], marker=marker, label=kind)
        for r in sub.itertuples():
            ax.annotate(
                r.annotator,
                (getattr(r, x), 100 * r.audit_accuracy),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for name, g in table[(table["kind"] == "cascade") & table[x].notna()].groupby("annotator"):
        ax.plot(g[x], 100 * g["audit_accuracy"], marker=".", label=f"{name} (thresholds)")
    ax.set_xlabel("list-price $ per 1,000 pool rows" if use_usd else "compute seconds per 1,000 pool rows")
    ax.set_ylabel("audit accuracy (%)")
    ax.set_title("Annotation cost vs accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
