"""Split one annotator's labelled synthetic pool into train/dev, shaping its label distribution.

Strategies: ``natural`` keeps the annotator's distribution; ``balanced`` down-samples every label
to the rarest one; ``gold_matched`` down-samples to the gold train proportions. Failed rows, rows
under the confidence threshold and (optionally) rows whose label flips when the annotator sees the
hypothesis first, or (aggregated annotators) on which too few members agree, are dropped first (and
counted); optionally (``noise_filter: cleanlab``) rows whose label confident learning finds likely
wrong (:mod:`synthllm.noise`). The train/dev split is grouped by premise (``premise_id``: every hypothesis written for
one premise lands on the same side, so dev never shares a premise with train) and stratified by
label where the groups allow it. This module never up-samples or relabels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from synthllm.errors import InputDataError
from synthllm.params import SplitParams


def _downsample_to(df: pd.DataFrame, shares: Mapping[str, float], seed: int) -> pd.DataFrame:
    counts = df["label"].value_counts()
    present = {lab: s for lab, s in shares.items() if s > 0}
    # the largest total for which every label has enough rows at the target shares
    total = min(counts.get(lab, 0) / s for lab, s in present.items())
    parts = [df[df["label"] == lab].sample(n=int(total * s), random_state=seed) for lab, s in present.items()]
    return pd.concat(parts).sort_index()


def shape_distribution(df: pd.DataFrame, strategy: str, gold_shares: Mapping[str, float], seed: int) -> pd.DataFrame:
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
    ok = len(counts) > 1 and counts.min() >= 2 and n_held >= len(counts) and len(df) - n_held >= len(counts)
    return df["label"] if ok else None


def grouped_split(df: pd.DataFrame, dev_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/dev with no premise on both sides: stratified by label over premise groups
    (``StratifiedGroupKFold``, one fold of about ``dev_fraction``) where every label has enough
    groups, else a plain grouped shuffle split."""
    groups = (df["premise_id"] if "premise_id" in df.columns else df["premise"]).astype(str).to_numpy()
    n_groups = len(set(groups))
    folds = max(2, round(1 / dev_fraction))
    counts = df.groupby("label")["label"].size()
    if n_groups >= folds and len(counts) > 1 and counts.min() >= folds:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        train_idx, dev_idx = next(splitter.split(df, df["label"], groups))
    else:
        if n_groups < 2:
            raise InputDataError(
                f"all {len(df)} usable synthetic rows share one premise: a grouped "
                f"train/dev split needs at least two (generate for more premises)"
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=dev_fraction, random_state=seed)
        train_idx, dev_idx = next(splitter.split(df, groups=groups))
    return df.iloc[sorted(train_idx)], df.iloc[sorted(dev_idx)]


def _confident(ok: pd.DataFrame, params: SplitParams, stats: dict) -> pd.DataFrame:
    """Rows at or above ``min_confidence``. A row without a confidence is never treated as
    confident or unconfident by default: ``missing_confidence`` says what to do with it."""
    if params.min_confidence <= 0:
        stats["dropped_low_confidence"] = 0
        return ok
    conf = ok["confidence"].astype(float) if "confidence" in ok.columns else pd.Series(float("nan"), ok.index)
    absent = conf.isna()
    if absent.any() and params.missing_confidence == "error":
        raise InputDataError(
            f"{int(absent.sum())} of {len(ok)} labelled rows have no confidence (their annotator's answers "
            f"came without logprobs), and split.min_confidence is {params.min_confidence}: set "
            f"split.missing_confidence to 'keep' or 'drop', or split.min_confidence to 0"
        )
    keep = (conf >= params.min_confidence) | (absent & (params.missing_confidence == "keep"))
    stats["dropped_low_confidence"] = int((~keep & ~absent).sum())
    stats[f"{'kept' if params.missing_confidence == 'keep' else 'dropped'}_without_confidence"] = int(absent.sum())
    return ok[keep]


def _agreed_and_stable(kept: pd.DataFrame, params: SplitParams, stats: dict) -> pd.DataFrame:
    """Rows whose vote agreement reaches ``min_agreement`` and, with ``require_stable``, whose label
    survives the prompt-order variant; counts what each filter drops into ``stats``."""
    if params.min_agreement > 0:
        if "agreement" not in kept.columns:
            raise InputDataError(
                "split.min_agreement applies to aggregated annotators only (their rows "
                "carry an agreement share); set it to 0 for single annotators"
            )
        agreed = kept[kept["agreement"].astype(float) >= params.min_agreement]
        stats["dropped_low_agreement"] = int(len(kept) - len(agreed))
        kept = agreed
    if params.require_stable:
        if "label_variant" not in kept.columns:
            raise InputDataError(
                "split.require_stable needs an annotator run with a "
                "stability_variant (no label_variant column in the annotations)"
            )
        stable = kept[kept["label_variant"] == kept["label"]]
        stats["dropped_unstable"] = int(len(kept) - len(stable))
        kept = stable
    return kept


def _capped(shaped: pd.DataFrame, params: SplitParams) -> pd.DataFrame:
    """At most ``max_size`` rows, a stratified sample in file order."""
    if params.max_size is not None and len(shaped) > params.max_size:
        shaped, _ = train_test_split(
            shaped,
            train_size=params.max_size,
            random_state=params.seed,
            stratify=_stratify(shaped, len(shaped) - params.max_size),
        )
        shaped = shaped.sort_index()
    return shaped


def split_synthetic(
    annotated: pd.DataFrame,
    params: SplitParams,
    gold_shares: Mapping[str, float],
    gold: pd.DataFrame | None = None,
    labels: Sequence[str] | None = None,
    pair: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``gold`` (the budget's gold rows) and ``labels`` are needed by ``noise_filter: cleanlab``."""
    if annotated.empty:
        raise InputDataError("no annotated rows to split (did generation keep any hypotheses?)")
    stats: dict = {"annotated": int(len(annotated))}
    ok = annotated[annotated["status"] == "ok"]
    stats["dropped_failed"] = int(len(annotated) - len(ok))
    kept = _confident(ok, params, stats)
    kept = _agreed_and_stable(kept, params, stats)
    if params.noise_filter == "cleanlab":
        if gold is None or labels is None:
            raise InputDataError("split.noise_filter 'cleanlab' needs the gold budget rows and the label set")
        from synthllm.noise import likely_mislabelled

        flags, per_class = likely_mislabelled(kept, gold, labels, params.seed, pair)
        stats["dropped_noise"] = per_class
        kept = kept[~flags]
    shaped = shape_distribution(kept, params.strategy, gold_shares, params.seed)
    stats["dropped_by_strategy"] = int(len(kept) - len(shaped))
    shaped = _capped(shaped, params)
    stats["dropped_by_cap"] = int(len(kept) - stats["dropped_by_strategy"] - len(shaped))
    if len(shaped) < 4:
        raise InputDataError(
            f"only {len(shaped)} usable synthetic rows after filtering "
            f"(need at least 4); lower split.min_confidence or generate more"
        )
    train, dev = grouped_split(shaped, params.dev_fraction, params.seed)
    stats.update(
        train=int(len(train)),
        dev=int(len(dev)),
        train_labels={k: int(v) for k, v in train["label"].value_counts().sort_index().items()},
    )
    return train, dev, stats
