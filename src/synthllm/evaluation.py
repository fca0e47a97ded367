"""Evaluate trained classifiers on gold test and its hard subsets (where the gold data has them).

Metrics per subset: accuracy, macro-F1, per-class F1 and the confusion matrix, with scikit-learn
doing the arithmetic. Per-item predictions are returned too, for paired significance tests in the
report. This module does not aggregate across seeds or regimes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from synthllm.gold import HARD_FLAGS

SUBSETS = ("all", *HARD_FLAGS)


def subsets_of(test: pd.DataFrame) -> list[str]:
    """'all' plus the hard subsets flagged in this test set (FarsTail has both; others may not)."""
    return [s for s in SUBSETS if s == "all" or s in test.columns]


def score(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    labels = list(labels)
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 6),
        "f1": {lab: round(float(v), 6) for lab, v in zip(labels, per_class)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def evaluate_predictions(test: pd.DataFrame, predicted: Sequence[str], labels: Sequence[str]) -> dict:
    pred = np.asarray(predicted)
    out = {}
    for subset in subsets_of(test):
        mask = np.ones(len(test), bool) if subset == "all" else test[subset].to_numpy(bool)
        out[subset] = score(test["label"].to_numpy()[mask], pred[mask], labels)
    return out


def confusion_rows(test: pd.DataFrame, predicted: Sequence[str]) -> list[dict]:
    """Rows for ``dvc plots`` (template ``confusion``)."""
    return [{"actual": a, "predicted": p} for a, p in zip(test["label"], predicted)]
