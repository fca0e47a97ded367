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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synthllm.params import NLI_LABELS


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def annotator_confusion_heatmaps(
    annotator_metrics: Mapping[str, dict], path: str | Path, labels: Sequence[str] = NLI_LABELS
) -> Path:
    """One heatmap per annotator of its gold-val audit: gold labels as rows, its labels as columns."""
    names = sorted(annotator_metrics)
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
    labels: Sequence[str] = NLI_LABELS,
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
