"""Derived annotators: a (confidence-weighted) majority vote over configured annotators.

The vote is an annotator like any other downstream: its rows have ``label``, ``confidence`` (the
winning share of votes or of confidence mass) and ``status``; a tie or a pair no member labelled is
``failed`` with the reason. It also carries ``agreement``, the share of members that chose the
winning label, which ``split.min_agreement`` filters on. Rows are aligned by id; this module does
not read files or call any model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from synthllm import stats


def vote(pools: Mapping[str, Sequence[dict]], members: Sequence[str], weighted: bool,
         name: str) -> list[dict]:
    """One row per id the first member labelled, in its order, with the members' vote."""
    missing = [m for m in members if m not in pools]
    if missing:
        raise ValueError(f"aggregate {name!r}: no annotations for members {missing}")
    by_id = {m: {r["id"]: r for r in pools[m]} for m in members}
    base = pools[members[0]]
    labels = [[by_id[m].get(r["id"], {}).get("label") for m in members] for r in base]
    confs = [[by_id[m].get(r["id"], {}).get("confidence") or 0.0 for m in members] for r in base]
    results = stats.majority_vote(labels, confs if weighted else None, weighted=weighted)
    rows = []
    for row, votes, (label, share) in zip(base, labels, results):
        present = [v for v in votes if v is not None]
        agreement = sum(v == label for v in present) / len(members) if label else 0.0
        out = {k: v for k, v in row.items() if k not in ("label", "confidence", "status", "reason",
                                                         "label_variant", "annotator")}
        out.update(annotator=name, label=label, confidence=round(float(share), 6) if label else None,
                   agreement=round(agreement, 6), votes=dict(zip(members, votes)),
                   status="ok" if label else "failed",
                   reason=None if label else ("no member labelled this pair" if not present else "tied vote"))
        rows.append(out)
    return rows
