"""Confident-learning filter: on real FarsTail pairs with planted wrong labels, it drops planted
errors far more often than right labels, and never uses a row's own label to judge it."""

import numpy as np
import pandas as pd

from synthllm.io import read_frame
from synthllm.noise import likely_mislabelled
from synthllm.params import NLI_LABELS, SplitParams
from synthllm.splitting import split_synthetic


def test_planted_wrong_labels_are_dropped_more_than_right_ones(gold_dir):
    gold = read_frame(gold_dir / "train.jsonl").sample(1500, random_state=0)
    pool = read_frame(gold_dir / "val.jsonl").sample(400, random_state=1).reset_index(drop=True)
    pool["premise_id"] = pool["premise"]
    rng = np.random.default_rng(0)
    planted = rng.random(len(pool)) < 0.3
    wrong = [rng.choice([x for x in NLI_LABELS if x != lab]) for lab in pool["label"]]
    pool["label"] = np.where(planted, wrong, pool["label"])
    seed = SplitParams().seed  # the split stage filters with its own seed
    flags, per_class = likely_mislabelled(pool, gold, NLI_LABELS, seed=seed)
    planted_rate, right_rate = flags[planted].mean(), flags[~planted].mean()
    assert planted_rate > 2 * right_rate and planted_rate > 0.3, (planted_rate, right_rate)
    assert sum(per_class.values()) == flags.sum() and set(per_class) == set(NLI_LABELS)

    pool["status"], pool["confidence"] = "ok", 1.0
    shares = gold["label"].value_counts(normalize=True).to_dict()
    _, _, stats = split_synthetic(pool, SplitParams(noise_filter="cleanlab"), shares, gold, NLI_LABELS)
    assert stats["dropped_noise"] == per_class
    _, _, plain = split_synthetic(pool, SplitParams(), shares, gold, NLI_LABELS)
    assert plain["train"] + plain["dev"] - stats["train"] - stats["dev"] == flags.sum()
    assert isinstance(pool, pd.DataFrame)
