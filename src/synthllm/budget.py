"""Gold budgets: how many labelled gold-train pairs an experiment may use.

One seeded order of gold train defines every budget: its first ``b`` rows are the budget-``b``
subset, so subsets are nested (250 ⊂ 500 ⊂ 1,000 …) and each is stratified (labels are interleaved
in proportion, so any prefix holds each label's share within one row). The budget governs every
use of gold *labels*: the classifier annotator's training data, downstream training and the gold
label shares a split may match. Few-shot examples (generation and LLM annotation prompts) come from
the first ``gold.shot_pool`` rows of the same order, which every budget contains, so one generated
and LLM-annotated pool serves every budget without using a label outside it. Premises for
generation may come from all of gold train: they are used as unlabelled text. Val and test are
never subset. This module does not read files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def nested_order(labels: Sequence[str], seed: int) -> np.ndarray:
    """Row indices in budget order: within each label a seeded permutation; labels interleaved by
    the position's share of that label ((k + 0.5) / n_label), ties broken by label name."""
    values = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    share = np.empty(len(values))
    label_rank = np.empty(len(values))
    for r, lab in enumerate(sorted(set(values))):
        idx = np.flatnonzero(values == lab)
        share[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + 0.5) / len(idx)
        label_rank[idx] = r
    return np.lexsort((label_rank, share))


def subset(train: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """The budget-``size`` subset of gold train (all of it for None or a size past its end), in the
    file's row order."""
    if size is None or size >= len(train):
        return train
    chosen = np.sort(nested_order(train["label"].tolist(), seed)[:size])
    return train.iloc[chosen]
