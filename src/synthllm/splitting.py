"""Split one annotator's labelled synthetic pool into train/dev, shaping its label distribution.

Strategies: ``natural`` keeps the annotator's distribution; ``balanced`` down-samples every label
to the rarest one; ``gold_matched`` down-samples to the gold train proportions. Failed rows, rows
under the confidence threshold and (optionally) rows whose label flips when the annotator sees the
hypothesis first, or (aggregated annotators) on which too few members agree, are dropped first (and
counted). This module never up-samples
or relabels.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
from sklearn.model_selection import train_test_split

from synthllm.errors import InputDataError
from synthllm.params import SplitParams


def _downsample_to(df: pd.DataFrame, shares: Mapping[str, float], seed: int) -> pd.DataFrame:
    counts = df["label"].value_counts()
    present = {lab: s for lab, s in shares.items() if s > 0}
    # the largest total for which every label has enough rows at the target shares
    total = min(counts.get(lab, 0) / s for lab, s in present.items())
    parts = [df[df["label"] == lab].sample(n=int(total * s), random_state=seed)
             for lab, s in present.items()]
    return pd.concat(parts).sort_index()


def shape_distribution(df: pd.DataFrame, strategy: str, gold_shares: Mapping[str, float],
                       seed: int) -> pd.DataFrame:
    if strategy == "natural" or df.empty:
        return df
    if strategy == "balanced":
        labels = sorted(df["label"].unique())
        return _downsample_to(df, {lab: 1 / len(labels) for lab in labels}, seed)
    if strategy == "gold_matched":
        return _downsample_to(df, gold_shares, seed)
    raise ValueError(f"unknown split strategy {strategy!r}")


def _stratify(df: pd.DataFrame, held_out: float | int):
    """Labels to stratify on, or None where scikit-learn cannot stratify (a label with one row,
    or a held-out part smaller than the number of labels)."""
    counts = df["label"].value_counts()
    n_held = held_out if isinstance(held_out, int) else math.ceil(held_out * len(df))
    ok = (len(counts) > 1 and counts.min() >= 2 and n_held >= len(counts)
          and len(df) - n_held >= len(counts))
    return df["label"] if ok else None


def split_synthetic(annotated: pd.DataFrame, params: SplitParams,
                    gold_shares: Mapping[str, float]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    if annotated.empty:
        raise InputDataError("no annotated rows to split (did generation keep any hypotheses?)")
    stats: dict = {"annotated": int(len(annotated))}
    ok = annotated[annotated["status"] == "ok"]
    stats["dropped_failed"] = int(len(annotated) - len(ok))
    conf = ok["confidence"].astype(float).fillna(1.0)
    kept = ok[conf >= params.min_confidence]
    stats["dropped_low_confidence"] = int(len(ok) - len(kept))
    if params.min_agreement > 0:
        if "agreement" not in kept.columns:
            raise InputDataError("split.min_agreement applies to aggregated annotators only (their rows "
                                 "carry an agreement share); set it to 0 for single annotators")
        agreed = kept[kept["agreement"].astype(float) >= params.min_agreement]
        stats["dropped_low_agreement"] = int(len(kept) - len(agreed))
        kept = agreed
    if params.require_stable:
        if "label_variant" not in kept.columns:
            raise InputDataError("split.require_stable needs an annotator run with a "
                                 "stability_variant (no label_variant column in the annotations)")
        stable = kept[kept["label_variant"] == kept["label"]]
        stats["dropped_unstable"] = int(len(kept) - len(stable))
        kept = stable
    shaped = shape_distribution(kept, params.strategy, gold_shares, params.seed)
    stats["dropped_by_strategy"] = int(len(kept) - len(shaped))
    if params.max_size is not None and len(shaped) > params.max_size:
        shaped, _ = train_test_split(shaped, train_size=params.max_size, random_state=params.seed,
                                     stratify=_stratify(shaped, len(shaped) - params.max_size))
        shaped = shaped.sort_index()
    stats["dropped_by_cap"] = int(len(kept) - stats["dropped_by_strategy"] - len(shaped))
    if len(shaped) < 4:
        raise InputDataError(f"only {len(shaped)} usable synthetic rows after filtering "
                             f"(need at least 4); lower split.min_confidence or generate more")
    train, dev = train_test_split(shaped, test_size=params.dev_fraction, random_state=params.seed,
                                  stratify=_stratify(shaped, params.dev_fraction))
    train, dev = train.sort_index(), dev.sort_index()
    stats.update(train=int(len(train)), dev=int(len(dev)),
                 train_labels={k: int(v) for k, v in train["label"].value_counts().sort_index().items()})
    return train, dev, stats
