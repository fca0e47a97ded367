"""Learning curves: the experiment re-run at a smaller gold budget, or with a fraction of the
synthetic pool, in one process.

At gold budget ``b`` everything that uses gold labels is redone with the budget's subset only: the
classifier annotator is retrained on it and relabels the pool (and the audit sample), the votes that
include it are recounted, cascades re-escalate on its new confidences (taking the expensive
annotator's existing labels, so a cascade whose expensive annotator is not active is skipped, with
the reason), every branch is split again (gold label shares from the subset), and every
configured regime is trained over ``train.seeds`` on the subset's gold rows and scored on gold test.
LLM annotations are reused as they are: their few-shot examples come from ``gold.shot_pool``, which
every budget contains (:mod:`synthllm.budget`). A pool fraction keeps a seeded, nested share of each
branch's synthetic train split. Predictions come back per seed and test item, so the report's
two-level bootstrap covers both.

This module does not read or write files, and does not decide which budgets to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from synthllm import cascade
from synthllm.aggregation import aggregate
from synthllm.annotation import annotate_rows, answer_format, parse_result
from synthllm.calls import Result
from synthllm.classifiers import train_regime
from synthllm.params import Params
from synthllm.quality import audit_metrics
from synthllm.splitting import split_synthetic

TRAIN_COLUMNS = ("id", "premise", "hypothesis", "label")  # what a regime reads of synthetic rows


def classifier_labels(clf, rows: Sequence[dict], name: str, params: Params) -> list[dict]:
    """The classifier annotator's rows, read exactly as the annotate stage reads them."""
    cfg = params.annotator(name)
    fmt = answer_format(cfg, None, params.task.labels, params.task.name)
    proba = clf.predict_proba([r["premise"] for r in rows], [r["hypothesis"] for r in rows])
    results = [
        Result(choice_logprobs={lab: float(np.log(max(p, 1e-12))) for lab, p in zip(clf.labels, row)}) for row in proba
    ]
    return annotate_rows(rows, [parse_result(r, fmt) for r in results], name)


def _cascade(pools: Mapping[str, list[dict]], name: str, params: Params, share: float | None) -> list[dict]:
    c = params.cascade(name)
    by_id = {n: {r["id"]: r for r in pools[n]} for n in c.cheap}
    rows = [{n: by_id[n][r["id"]] for n in c.cheap} for r in pools[c.cheap[0]]]
    expensive = {r["id"]: r for r in pools[c.expensive]}
    return cascade.combine(rows, cascade.escalate(rows, c, c.threshold, share), expensive, c, name)


def relabel(
    gold: pd.DataFrame, pools: Mapping[str, list[dict]], audits: Mapping[str, list[dict]], params: Params
) -> tuple[dict[str, list[dict]], dict[str, dict], dict[str, str]]:
    """Every branch's labelled pool at this budget, each branch's audit metrics, and the branches
    that cannot be redone without new calls (a cascade whose expensive annotator is not active),
    with the reason."""
    pools, audits = dict(pools), dict(audits)
    for name in params.annotators:
        if params.annotator_configs[name].kind != "classifier":
            continue
        t = params.annotator_training
        clf, _ = train_regime(
            "gold_only",
            gold,
            None,
            t.classifier,
            gold_epochs=t.gold_epochs,
            synthetic_epochs=1,
            seed=t.seed,
            labels=params.task.labels,
            pair=params.task.input == "pair",
        )
        pools[name] = classifier_labels(clf, pools[name], name, params)
        audits[name] = classifier_labels(clf, audits[name], name, params)
    for name, agg in params.aggregates.items():
        pools[name], audits[name] = aggregate(pools, audits, agg, name, params.task.labels)
    skipped = {}
    for name, c in params.cascades.items():
        if c.expensive not in params.annotators:
            skipped[name] = (
                f"its expensive annotator {c.expensive!r} is not active, so it has no labels for rows escalated at this budget"
            )
            continue
        share = cascade.escalation_share(c, len(pools[c.cheap[0]]))  # the pool's cap, on the audit too
        pools[name], audits[name] = _cascade(pools, name, params, share), _cascade(audits, name, params, share)
    kept = [b for b in params.branches if b not in skipped]
    quality = {b: audit_metrics(audits[b], pools[b], params.task.labels)["audit"] for b in kept}
    return {b: pools[b] for b in kept}, quality, skipped


def nested_fraction(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The first ``fraction`` of a seeded order of ``rows`` (nested across fractions)."""
    if fraction >= 1:
        return rows
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows.iloc[np.sort(order[: max(1, round(fraction * len(rows)))])]


def evaluate_runs(
    gold: pd.DataFrame,
    synthetic: Mapping[str, pd.DataFrame],
    test: pd.DataFrame,
    params: Params,
    regimes: Sequence[str],
) -> pd.DataFrame:
    """Per-seed test predictions of gold_only and every branch × regime: columns run, seed, id,
    label, predicted (the shape the report's bootstrap reads)."""
    t, frames = params.train, []
    runs = [("gold__gold_only", "gold_only", None)] + [
        (f"{b}__{r}", r, rows) for b, rows in synthetic.items() for r in regimes
    ]
    for run, regime, rows in runs:
        for seed in t.seeds:
            clf, _ = train_regime(
                regime,
                gold,
                rows,
                t.classifier,
                gold_epochs=t.gold_epochs,
                synthetic_epochs=t.synthetic_epochs,
                seed=seed,
                labels=params.task.labels,
                pair=params.task.input == "pair",
            )
            proba = clf.predict_proba(list(test["premise"]), list(test["hypothesis"]))
            frames.append(
                pd.DataFrame(
                    {
                        "run": run,
                        "seed": f"seed-{seed}",
                        "id": test["id"].to_numpy(),
                        "label": test["label"].to_numpy(),
                        "predicted": np.asarray(clf.labels)[proba.argmax(1)],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def split_branches(pools: Mapping[str, list[dict]], gold: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
    """Each branch's synthetic train split, with only the columns training reads."""
    shares = gold["label"].value_counts(normalize=True).to_dict()
    whole = {}
    for name, rows in pools.items():
        train, _, _ = split_synthetic(
            pd.DataFrame(rows), params.split, shares, gold, params.task.labels, params.task.input == "pair"
        )
        whole[name] = train[[c for c in TRAIN_COLUMNS if c in train.columns]].reset_index(drop=True)
    return whole


def fraction_of(
    whole: Mapping[str, pd.DataFrame], fraction: float, params: Params
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """``fraction`` of each branch's train split (nested across fractions), and the row counts."""
    out = {name: nested_fraction(train, fraction, params.split.seed) for name, train in whole.items()}
    return out, {name: int(len(rows)) for name, rows in out.items()}
