"""Derived annotators: a (confidence-weighted) majority vote over configured annotators.

The vote is an annotator like any other downstream: its rows have ``label``, ``confidence`` (the
winning share of votes or of confidence mass) and ``status``; a tie or a pair no member labelled is
``failed`` with the reason. It also carries ``agreement``, the share of members that chose the
winning label, which ``split.min_agreement`` filters on. A weighted vote needs every member label
to carry a confidence: one without (a server that returned no logprobs) makes the vote fail with
an error naming the member, unless the params name a ``confidence_fallback`` weight for it — never
a silent weight of 0 or 1. Rows are aligned by id; this module does not read files or call any model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from synthllm import stats
from synthllm.errors import InputDataError


def _weights(rows: list[dict | None], members: Sequence[str], name: str,
             fallback: float | None) -> list[list[float]]:
    weights, missing = [], {}
    for member_rows in rows:
        w = []
        for m, r in zip(members, member_rows):
            conf = (r or {}).get("confidence")
            if (r or {}).get("label") is not None and conf is None:
                missing[m] = missing.get(m, 0) + 1
                conf = fallback
            w.append(0.0 if conf is None else float(conf))  # 0 only for members that did not vote
        weights.append(w)
    if missing and fallback is None:
        raise InputDataError(
            f"aggregate {name!r} is weighted, but {missing} labels of these members have no confidence "
            f"(their answers came without logprobs). Set aggregates.{name}.confidence_fallback to the "
            f"weight such a vote should get, set weighted: false, or turn logprobs on for that annotator")
    return weights


def vote(pools: Mapping[str, Sequence[dict]], members: Sequence[str], weighted: bool,
         name: str, confidence_fallback: float | None = None) -> list[dict]:
    """One row per id the first member labelled, in its order, with the members' vote."""
    missing = [m for m in members if m not in pools]
    if missing:
        raise ValueError(f"aggregate {name!r}: no annotations for members {missing}")
    by_id = {m: {r["id"]: r for r in pools[m]} for m in members}
    base = pools[members[0]]
    member_rows = [[by_id[m].get(r["id"]) for m in members] for r in base]
    labels = [[(x or {}).get("label") for x in xs] for xs in member_rows]
    confs = _weights(member_rows, members, name, confidence_fallback) if weighted else None
    results = stats.majority_vote(labels, confs, weighted=weighted)
    rows = []
    for row, votes, (label, share) in zip(base, labels, results):
        present = [v for v in votes if v is not None]
        agreement = sum(v == label for v in present) / len(members) if label else 0.0
        out = {k: v for k, v in row.items() if k not in (
            "label", "confidence", "confidence_source", "labels_seen", "status", "reason", "attempts",
            "label_variant", "variant_confidence", "variant_status", "variant_reason", "annotator")}
        out.update(annotator=name, label=label, confidence=round(float(share), 6) if label else None,
                   confidence_source=("vote_weight_share" if weighted else "vote_share") if label else None,
                   agreement=round(agreement, 6), votes=dict(zip(members, votes)),
                   status="ok" if label else "failed",
                   reason=None if label else ("no member labelled this pair" if not present else "tied vote"))
        rows.append(out)
    return rows
