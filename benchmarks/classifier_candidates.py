"""Which offline pair classifier for Persian NLI (FarsTail)? The candidates of issue 13, measured.

Every candidate trains on gold train (the pipeline's ``gold_only`` regime, ``gold_epochs`` = 8) and
is scored on FarsTail val and test. **Every choice is made on val**; test accuracy is printed and
never read by any decision here:

1. each candidate runs once (seed 1);
2. the finalists are the best full-budget Gemma candidate by val accuracy, and the best one whose
   training takes under ``--fast-seconds`` per seed;
3. the finalists run on ``--seeds``, with the n-gram ensemble member trained alongside; the n-gram
   weight is the one of ``0, 0.1, …, 0.5`` with the best mean val accuracy over those seeds.

Gemma token states are computed once per configuration and cached (``--cache``); the time that
takes is reported apart from training time ("feature s"), and training time is measured with the
cache full. Run from the repository root, with the gold stage's output and the generator folder:

    python benchmarks/classifier_candidates.py --gold data/gold --model-dir models/generator \\
        --cache .cache/synthllm/gemma-features --json benchmarks/results/classifier_candidates.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synthllm import stats
from synthllm.classifiers.gemma_heads import GemmaHeadClassifier
from synthllm.classifiers.gemma_states import GemmaStateCache
from synthllm.classifiers.ngrams import HashingSGDClassifier
from synthllm.io import read_frame
from synthllm.params import NLI_LABELS, GemmaHeadParams, SklearnClassifierParams

GOLD_EPOCHS = 8
NGRAM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)

# Gemma candidates: overrides of GemmaHeadParams (no n-gram member; that is stage 3)
GEMMA_CANDIDATES: dict[str, dict] = {
    "attn_apart_l0": dict(layers=[0], condition_on_premise=False),
    "attn_apart_l6": dict(layers=[6], condition_on_premise=False),
    "attn_cond_l4": dict(layers=[4]),
    "attn_cond_l6": dict(layers=[6]),
    "attn_cond_l8": dict(layers=[8]),
    "attn_cond_l8_e2": dict(layers=[8], epoch_scale=0.25),
    "pooled_cond_l6": dict(layers=[6], head="pooled", hidden=256, learning_rate=1e-3),
    "pooled_cond_l8": dict(layers=[8], head="pooled", hidden=256, learning_rate=1e-3),
}
# the Gemma passes that fill the cache: one pass up to layer 8 stores the conditioned layers 4, 6
# and 8 (the compute of layer 8 alone: the layers below run anyway), one up to layer 6 the
# texts read apart
FILLS: dict[str, dict] = {"cond": dict(layers=[4, 6, 8]), "apart": dict(layers=[0, 6], condition_on_premise=False)}
DESCRIPTIONS = {
    "tfidf_lr": "TF-IDF word 1-2 + char 2-4 (hypothesis) + words new to the premise, LogisticRegression",
    "sklearn_sgd": "project default: hashed n-grams + overlap, SGD logistic (HashingSGDClassifier)",
    "pooled_lr_apart_l6": "mean-pooled Gemma layer-6 states, texts read apart, [p,h,|p-h|,p*h] + LR",
    "attn_apart_l0": "align head on Gemma input embeddings (layer 0), texts read apart",
    "attn_apart_l6": "align head on Gemma layer-6 states, texts read apart",
    "attn_cond_l4": "align head, layer 4, hypothesis read after the premise",
    "attn_cond_l6": "align head, layer 6, hypothesis read after the premise",
    "attn_cond_l8": "align head, layer 8, hypothesis read after the premise",
    "attn_cond_l8_e2": "as attn_cond_l8, 2 of the 8 epochs (epoch_scale 0.25)",
    "pooled_cond_l6": "MLP on the mean layer-6 hypothesis state read after the premise",
    "pooled_cond_l8": "MLP on the mean layer-8 hypothesis state read after the premise",
}


@dataclass
class Result:
    name: str
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    feature_s: float | None = None
    note: str = ""


def accuracy(proba: np.ndarray, rows: pd.DataFrame) -> float:
    return float(np.mean(np.asarray(NLI_LABELS)[proba.argmax(1)] == rows["label"].to_numpy()))


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, process CPU seconds): on a shared machine the wall time of a run grows
    with whatever else runs, its CPU time much less."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


# -- candidates without Gemma


def tfidf_lr(gold: dict[str, pd.DataFrame]) -> Result:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def novel(rows: pd.DataFrame) -> list[str]:
        return [
            " ".join(w for w in h.split() if w not in set(p.split()))
            for p, h in zip(rows["premise"], rows["hypothesis"])
        ]

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2)
    new = TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True)
    fit = [
        words.fit(gold["train"]["hypothesis"]),
        chars.fit(gold["train"]["hypothesis"]),
        new.fit(novel(gold["train"])),
    ]
    x = {
        s: hstack(
            [fit[0].transform(r["hypothesis"]), fit[1].transform(r["hypothesis"]), fit[2].transform(novel(r))]
        ).tocsr()
        for s, r in gold.items()
    }
    best: Result | None = None
    for c in (1.0, 3.0, 10.0):  # C chosen on val
        model, seconds, cpu = timed(
            lambda c=c: LogisticRegression(C=c, max_iter=2000).fit(x["train"], gold["train"]["label"])
        )
        res = Result(
            "tfidf_lr",
            [float(model.score(x["val"], gold["val"]["label"]))],
            [float(model.score(x["test"], gold["test"]["label"]))],
            [seconds],
            [cpu],
            note=f"C={c} (of 1, 3, 10, on val); closed form: no phases",
        )
        if best is None or res.val[0] > best.val[0]:
            best = res
    return best


def sklearn_sgd(gold: dict[str, pd.DataFrame], seeds: list[int]) -> Result:
    res = Result("sklearn_sgd", note="SklearnClassifierParams() defaults")
    for seed in seeds:
        clf = HashingSGDClassifier(SklearnClassifierParams(), NLI_LABELS)
        _, seconds, cpu = timed(
            lambda clf=clf, seed=seed: clf.fit_phase(gold["train"], GOLD_EPOCHS, seed, 0, lambda e: None)
        )
        for split, out in (("val", res.val), ("test", res.test)):
            out.append(
                accuracy(clf.predict_proba(list(gold[split]["premise"]), list(gold[split]["hypothesis"])), gold[split])
            )
        res.train_s.append(seconds)
        res.cpu_s.append(cpu)
    return res


def pooled_lr(gold: dict[str, pd.DataFrame], cache: GemmaStateCache, feature_s: float) -> Result:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def features(rows: pd.DataFrame) -> np.ndarray:
        out = []
        for ps, _, hs, _ in cache.get(list(rows["premise"]), list(rows["hypothesis"])):
            p, h = np.asarray(ps, np.float32).mean(0), np.asarray(hs, np.float32).mean(0)
            out.append(np.concatenate([p, h, np.abs(p - h), p * h]))
        return np.stack(out)

    x = {s: features(r) for s, r in gold.items()}
    scaler = StandardScaler().fit(x["train"])
    x = {s: scaler.transform(v) for s, v in x.items()}
    best: Result | None = None
    for c in (0.003, 0.01, 0.03):  # C chosen on val
        model, seconds, cpu = timed(
            lambda c=c: LogisticRegression(C=c, max_iter=1000).fit(x["train"], gold["train"]["label"])
        )
        res = Result(
            "pooled_lr_apart_l6",
            [float(model.score(x["val"], gold["val"]["label"]))],
            [float(model.score(x["test"], gold["test"]["label"]))],
            [seconds],
            [cpu],
            feature_s,
            note=f"C={c} (of 0.003, 0.01, 0.03, on val); closed form: no phases",
        )
        if best is None or res.val[0] > best.val[0]:
            best = res
    return best


# -- Gemma attention candidates


def gemma_params(args: argparse.Namespace, overrides: dict, ngram_weight: float) -> GemmaHeadParams:
    return GemmaHeadParams(
        model_dir=str(args.model_dir), feature_cache=str(args.cache), ngram_weight=ngram_weight, **overrides
    )


def fill_cache(args: argparse.Namespace, overrides: dict, gold: dict[str, pd.DataFrame]) -> float:
    """Seconds to compute the states of every gold pair that the cache lacks for this config."""
    params = gemma_params(args, overrides, 0.0)
    cache = GemmaStateCache(
        params.model_dir,
        params.layers,
        params.max_tokens,
        params.feature_cache,
        params.condition_on_premise,
        params.extract_batch_tokens,
    )
    rows = pd.concat(gold.values())
    _, seconds, _ = timed(lambda: cache.get(list(rows["premise"]), list(rows["hypothesis"])))
    return seconds


def run_gemma(
    args: argparse.Namespace, name: str, overrides: dict, gold: dict[str, pd.DataFrame], seed: int, ngram_weight: float
) -> dict:
    clf = GemmaHeadClassifier(gemma_params(args, overrides, ngram_weight), NLI_LABELS)
    log, seconds, cpu = timed(lambda: clf.fit_phases([(gold["train"], GOLD_EPOCHS)], seed))
    out = {"name": name, "seed": seed, "train_s": seconds, "cpu_s": cpu, "log": log}
    for split in ("val", "test"):
        rows = gold[split]
        out[f"{split}_head"] = clf.head_proba(list(rows["premise"]), list(rows["hypothesis"]))
        if clf.ngram is not None:
            out[f"{split}_ngram"] = clf.ngram.predict_proba(list(rows["premise"]), list(rows["hypothesis"]))
    print(f"{name} seed {seed}: val {accuracy(out['val_head'], gold['val']):.4f} ({seconds:.0f} s)", flush=True)
    return out


def finalist(
    args: argparse.Namespace, name: str, gold: dict[str, pd.DataFrame], feature_s: float
) -> tuple[Result, Result]:
    """The head alone and the val-chosen ensemble, over every seed."""
    runs = [run_gemma(args, name, GEMMA_CANDIDATES[name], gold, seed, 0.5) for seed in args.seeds]

    def mean_val(w: float) -> float:
        return float(np.mean([accuracy((1 - w) * r["val_head"] + w * r["val_ngram"], gold["val"]) for r in runs]))

    w = max(NGRAM_WEIGHTS, key=lambda w: (mean_val(w), -w))  # ties: the smaller weight
    alone = Result(name, feature_s=feature_s, note="head alone (train s include the n-gram member)")
    ens = Result(
        f"{name} + ngram (w={w})",
        feature_s=feature_s,
        note=f"n-gram weight {w} of {NGRAM_WEIGHTS} by mean val accuracy over seeds",
    )
    for r in runs:
        for res, weight in ((alone, 0.0), (ens, w)):
            res.val.append(accuracy((1 - weight) * r["val_head"] + weight * r["val_ngram"], gold["val"]))
            res.test.append(accuracy((1 - weight) * r["test_head"] + weight * r["test_ngram"], gold["test"]))
            res.train_s.append(r["train_s"])
            res.cpu_s.append(r["cpu_s"])
    return alone, ens


# -- report


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    mean, low, high = stats.seed_mean_ci(values)
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def table(results: list[Result]) -> str:
    lines = [
        "| candidate | seeds | val acc % | test acc % | train s / seed (CPU s) | one-off feature s | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        feature = "–" if r.feature_s is None else f"{r.feature_s:.0f}"
        lines.append(
            f"| {r.name} | {len(r.val)} | {fmt(r.val)} | {fmt(r.test)} | "
            f"{np.mean(r.train_s):.1f} ({np.mean(r.cpu_s):.0f}) | {feature} | {r.note} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        return f"{name} ({sum(line.startswith('processor') for line in lines)} cores)"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", type=Path, default=Path("data/gold"))
    ap.add_argument("--model-dir", type=Path, default=Path("models/generator"))
    ap.add_argument("--cache", type=Path, default=Path(".cache/synthllm/gemma-features"))
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    ap.add_argument("--fast-seconds", type=float, default=30.0)
    ap.add_argument(
        "--only", type=lambda s: s.split(","), default=None, help="comma-separated candidate names (default: all)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write every number here too")
    args = ap.parse_args()
    gold = {s: read_frame(args.gold / f"{s}.jsonl") for s in ("train", "val", "test")}
    wanted = set(args.only or ["tfidf_lr", "sklearn_sgd", "pooled_lr_apart_l6", *GEMMA_CANDIDATES])
    results: list[Result] = []
    if "tfidf_lr" in wanted:
        results.append(tfidf_lr(gold))
    if "sklearn_sgd" in wanted:
        results.append(sklearn_sgd(gold, args.seeds))

    # one-off features: each candidate is charged the Gemma pass that stored its states
    gemma = [n for n in (*GEMMA_CANDIDATES, "pooled_lr_apart_l6") if n in wanted]
    fill_s = {}
    for group, overrides in FILLS.items():
        if any(("apart" in n) == (group == "apart") for n in gemma):
            fill_s[group] = fill_cache(args, overrides, gold)
            print(f"features, {group} pass: {fill_s[group]:.0f} s", flush=True)
    feature_s = {n: fill_s.get("apart" if "apart" in n else "cond", 0.0) for n in gemma}
    if "pooled_lr_apart_l6" in wanted:
        p = gemma_params(args, GEMMA_CANDIDATES["attn_apart_l6"], 0.0)
        cache = GemmaStateCache(p.model_dir, p.layers, p.max_tokens, p.feature_cache, False)
        results.append(pooled_lr(gold, cache, feature_s["pooled_lr_apart_l6"]))

    singles: dict[str, Result] = {}
    for name, overrides in GEMMA_CANDIDATES.items():
        if name in wanted:
            run = run_gemma(args, name, overrides, gold, args.seeds[0], 0.0)
            singles[name] = Result(
                name,
                [accuracy(run["val_head"], gold["val"])],
                [accuracy(run["test_head"], gold["test"])],
                [run["train_s"]],
                [run["cpu_s"]],
                feature_s[name],
                note="head alone, one seed",
            )
    results.extend(singles.values())
    if singles:  # finalists, by val accuracy only
        full = max(singles.values(), key=lambda r: r.val[0])
        fast = [r for r in singles.values() if r.train_s[0] < args.fast_seconds]
        names = [full.name] + ([max(fast, key=lambda r: r.val[0]).name] if fast else [])
        for name in dict.fromkeys(names):
            results.extend(finalist(args, name, gold, feature_s[name]))

    header = f"{cpu_model()} · {torch.get_num_threads()} torch threads · {time.strftime('%Y-%m-%d')}"
    print(header)
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": header, "results": [r.__dict__ for r in results], "descriptions": DESCRIPTIONS},
                indent=1,
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
