"""Generate: label-conditioned texts (hypotheses for gold-train premises), then quality filters.

Pair tasks (NLI) write one hypothesis per premise × intended label; single-text tasks write one text
per prompt seed × intended label, the seed choosing the few-shot examples (rows then carry an empty
premise).

Pure functions: premises and shot pools in, :class:`~synthllm.backends.Request` objects out; backend
results in, filtered provenance rows and filter counts out. The generator's intended label is kept
as provenance only; labelling is the annotators' job. This module never reads gold val/test except
as a set of texts to keep out (leakage: exact after normalisation, or near — a character n-gram
Jaccard similarity at or above ``filters.near_leakage_jaccard`` to any of them).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from synthllm.calls import Request, Result, stable_seed
from synthllm.errors import InputDataError
from synthllm.params import FilterParams, GenerateParams
from synthllm.prompts import GeneratePrompt, pick_shots
from synthllm.text import PERSIAN, TextProcessor, near_duplicates


def label_codes(labels: Sequence[str]) -> dict[str, str]:
    """Shortest distinct prefixes of the labels (e/c/n for NLI), used in synthetic row ids."""
    for k in range(1, max(map(len, labels)) + 1):
        codes = {lab: lab[:k] for lab in labels}
        if len(set(codes.values())) == len(labels):
            return codes
    raise ValueError(f"labels {list(labels)} have no distinct prefixes")


def prompt_seeds(n: int) -> list[dict]:
    """Single-text tasks: n prompt seeds with an empty premise (the seed picks the shots)."""
    return [{"premise_id": f"s{i:05d}", "premise": ""} for i in range(n)]


def select_premises(
    gold_train: Sequence[dict], n: int, seed: int, blocked: set[str], tp: TextProcessor = PERSIAN
) -> tuple[list[dict], int]:
    """n distinct premises from gold train (seeded); premises seen in val/test are skipped."""
    by_key: dict[str, dict] = {}
    for row in gold_train:
        if not str(row.get("premise", "")).strip():
            raise InputDataError(f"premise file has an empty premise (row id {row.get('id')})")
        by_key.setdefault(tp.dedup_key(row["premise"]), row)
    leaked = [k for k in by_key if k in blocked]
    keys = sorted(k for k in by_key if k not in blocked)
    random.Random(seed).shuffle(keys)
    chosen = [{"premise_id": by_key[k]["id"], "premise": by_key[k]["premise"]} for k in keys[:n]]
    return chosen, len(leaked)


def plan_requests(
    premises: Sequence[dict],
    shot_pool: Sequence[dict],
    prompt: GeneratePrompt,
    params: GenerateParams,
    labels: Sequence[str],
) -> tuple[list[Request], list[dict]]:
    """One request per premise (or prompt seed) × target label × sample, with its provenance row."""
    by_label = {lab: [r for r in shot_pool if r["label"] == lab] for lab in labels}
    requests, meta = [], []
    for p in premises:
        for label in labels:
            for s in range(params.samples_per_label):
                seed = stable_seed(params.seed, p["premise_id"], label, s)
                shots = pick_shots(by_label[label], params.shots, random.Random(seed), p["premise"])
                requests.append(
                    Request(
                        prompt=prompt.render(p["premise"], label, shots),
                        max_new_tokens=params.max_new_tokens,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        stop=tuple(prompt.stop),
                        seed=seed,
                    )
                )
                meta.append(
                    {
                        "premise_id": p["premise_id"],
                        "premise": p["premise"],
                        "intended_label": label,
                        "sample": s,
                        "seed": seed,
                        "prompt_version": prompt.version,
                    }
                )
    return requests, meta


def _reject_reason(hyp: str, premise: str, result: Result, f: FilterParams, tp: TextProcessor) -> str | None:
    if not result.ok:
        return "backend_error"
    if result.finish_reason == "length":
        return "truncated"
    if not hyp:
        return "empty"
    if tp.script_ratio(hyp) < f.min_script_ratio:
        return "script_ratio"
    n = len(hyp.split())
    if n < f.min_words:
        return "too_short"
    if n > f.max_words:
        return "too_long"
    if premise and (tp.dedup_key(hyp) == tp.dedup_key(premise) or tp.overlap(premise, hyp) >= f.max_premise_overlap):
        return "copy_of_premise"
    return None


def filter_generations(
    meta: Sequence[dict],
    results: Sequence[Result],
    filters: FilterParams,
    blocked: set[str],
    generator: str,
    tp: TextProcessor = PERSIAN,
) -> tuple[list[dict], dict[str, int]]:
    """Apply the filters in a fixed order; every dropped row is counted under one reason."""
    codes = label_codes(sorted({m["intended_label"] for m in meta})) if meta else {}
    counts: Counter[str] = Counter(generated=len(meta))
    seen: set[tuple[str, str]] = set()
    kept = []
    hyps = [tp.normalize(res.text or "") if res.ok else "" for res in results]
    near = (
        near_duplicates(
            [tp.dedup_key(h) for h in hyps], sorted(blocked), filters.near_leakage_ngram, filters.near_leakage_jaccard
        )
        if filters.near_leakage_jaccard is not None
        else [False] * len(hyps)
    )
    for m, res, hyp, is_near in zip(meta, results, hyps, near):
        reason = _reject_reason(hyp, m["premise"], res, filters, tp)
        if reason is None:
            hyp_key = tp.dedup_key(hyp)
            key = (tp.dedup_key(m["premise"]), hyp_key)
            if hyp_key in blocked:
                reason = "leakage"
            elif is_near:
                reason = "near_leakage"
            elif key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason:
            counts[f"dropped_{reason}"] += 1
            continue
        kept.append(
            {
                "id": f"syn-{m['premise_id']}-{codes[m['intended_label']]}{m['sample']}",
                "premise": m["premise"],
                "hypothesis": hyp,
                "intended_label": m["intended_label"],
                "generator": generator,
                "prompt_version": m["prompt_version"],
                "seed": m["seed"],
                "premise_id": m["premise_id"],
            }
        )
    counts["kept"] = len(kept)
    return kept, dict(counts)


def blocked_texts(frames: Iterable[Sequence[dict]], tp: TextProcessor = PERSIAN) -> set[str]:
    """Dedup keys of every premise and hypothesis in the given (val/test) rows."""
    return {tp.dedup_key(r[col]) for rows in frames for r in rows for col in ("premise", "hypothesis") if r.get(col)}
