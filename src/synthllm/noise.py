"""Label-noise filtering of a synthetic pool with confident learning (cleanlab).

Each synthetic row gets out-of-fold class probabilities from a model trained on the gold budget plus
the *other* folds of the synthetic rows (the row's own label never informs its prediction); rows
whose given label cleanlab finds likely wrong (``find_label_issues``, ``prune_by_noise_rate``) are
dropped, and the count per given label is reported. The model is the offline hashed n-gram
classifier (:class:`synthllm.classifiers.ngrams.HashingSGDClassifier`), whatever ``train.classifier`` is,
so the filter costs seconds. This module does not decide whether to filter (``split.noise_filter``)
or read files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from synthllm.params import SklearnClassifierParams


def out_of_fold_probabilities(
    synthetic: pd.DataFrame,
    gold: pd.DataFrame,
    labels: Sequence[str],
    folds: int = 5,
    epochs: int = 5,
    seed: int = 0,
    pair: bool = True,
) -> np.ndarray:
    """P(label | row) for every synthetic row, from models that never saw that row (folds grouped
    by premise, so a premise's other hypotheses do not leak its label either)."""
    from synthllm.classifiers.ngrams import HashingSGDClassifier

    groups = (synthetic["premise_id"] if "premise_id" in synthetic.columns else synthetic["premise"]).astype(str)
    k = max(2, min(folds, groups.nunique()))
    proba = np.zeros((len(synthetic), len(labels)))
    for train_idx, held_idx in GroupKFold(n_splits=k).split(synthetic, groups=groups):
        clf = HashingSGDClassifier(SklearnClassifierParams(), labels, pair)
        rows = pd.concat([gold, synthetic.iloc[train_idx]], ignore_index=True)
        clf.fit_phase(rows, epochs, seed, 0, lambda epoch: None)
        held = synthetic.iloc[held_idx]
        proba[held_idx] = clf.predict_proba(list(held["premise"]), list(held["hypothesis"]))
    return proba


def likely_mislabelled(
    synthetic: pd.DataFrame, gold: pd.DataFrame, labels: Sequence[str], seed: int = 0, pair: bool = True
) -> tuple[np.ndarray, dict[str, int]]:
    """A boolean mask of rows cleanlab flags, and the number flagged per given label."""
    from cleanlab.filter import find_label_issues

    index = {lab: i for i, lab in enumerate(labels)}
    given = synthetic["label"].map(index).to_numpy()
    proba = out_of_fold_probabilities(synthetic, gold, labels, seed=seed, pair=pair)
    present = sorted(set(given))
    if len(present) < 2:  # confident learning needs at least two classes among the given labels
        return np.zeros(len(synthetic), bool), {}
    flags = find_label_issues(labels=given, pred_probs=proba, filter_by="prune_by_noise_rate")
    dropped = Counter(synthetic.loc[flags, "label"]) if flags.any() else Counter()
    return flags, {lab: int(dropped.get(lab, 0)) for lab in labels}
