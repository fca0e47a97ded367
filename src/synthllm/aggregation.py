"""Derived annotators: a vote over configured annotators' labels, by one of four methods.

Every method turns the members' labels on a row into a posterior over the task's labels; the row's
label is its most probable label and its ``confidence`` that label's probability.

- ``majority`` and ``confidence`` pool the members linearly: a member that chose label l with
  weight w (1 for ``majority``, its own confidence for ``confidence``) puts w on l and spreads
  1 − w evenly over all labels. The posterior is the mean over *all* members. The winner is the
  plain (or confidence-weighted) majority, as before.
- ``audit_weighted``: each member's per-class reliability, its confusion matrix P(member says o |
  truth t), is estimated on the gold audit sample (add-``smoothing`` counts), and the members'
  evidence is combined as log-odds (naive Bayes with the audit's class prior).
- ``dawid_skene``: EM over pool and audit rows (Dawid & Skene 1979), the audit's gold labels fixed
  as known truths, started from the audit confusion matrices. The E-step and M-step are those of
  crowd-kit's ``DawidSkene`` (tested against it on unanchored data), plus the anchoring and smoothing.

One definition of a missing member, for every method: a member with no label gives no evidence —
the even spread in a linear pool, a likelihood of 1 in the learned methods — so a missing member
moves the posterior toward uncertainty (its prior), never away from it. A row that no member
labelled, or whose two best labels tie, is ``failed`` with the reason.

Honest audit numbers: for the learned methods the audit rows' labels are out of fold — the
reliabilities that label a row are fit on the other ``folds`` of the audit sample (with the pool,
for EM), never on the row itself; the pool is labelled with reliabilities fit on the whole audit.
Rows are aligned by id. This module does not read files or call any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold

from synthllm import stats
from synthllm.errors import InputDataError
from synthllm.params import LEARNED_METHODS, VOTE_METHODS, AggregateParams

MISSING = -1
EM_MAX_ITER = 100  # crowd-kit's default; EM on three members converges in far fewer
EM_TOL = 1e-9  # largest change of any posterior between iterations that counts as converged
_EPS = 1e-10  # crowd-kit's floor for probabilities before a log
_TIE_RTOL, _TIE_ATOL = 1e-9, 1e-12  # 0.7 + 0.2 and 0.9 must tie
_DROPPED = (
    "label",
    "confidence",
    "confidence_source",
    "labels_seen",
    "status",
    "reason",
    "attempts",
    "label_variant",
    "variant_confidence",
    "variant_status",
    "variant_reason",
    "annotator",
)


@dataclass(frozen=True)
class MemberLabels:
    """The members' labels on one set of rows (the first member's rows, aligned by id)."""

    rows: list[dict]
    codes: np.ndarray  # rows × members, label index or MISSING
    confidences: np.ndarray  # rows × members, NaN where a member gave no confidence
    gold: np.ndarray  # rows, gold label index or MISSING (pool rows have none)


def member_labels(
    pools: Mapping[str, Sequence[dict]], members: Sequence[str], labels: Sequence[str], name: str
) -> MemberLabels:
    absent = [m for m in members if m not in pools]
    if absent:
        raise ValueError(f"aggregate {name!r}: no annotations for members {absent}")
    index = {lab: i for i, lab in enumerate(labels)}

    def code(value: object, where: str) -> int:
        if stats.is_missing(value):
            return MISSING
        if value not in index:
            raise InputDataError(
                f"aggregate {name!r}: {where} has label {value!r}, not one of task.labels {list(labels)}"
            )
        return index[value]

    base = list(pools[members[0]])
    by_id = {m: {r["id"]: r for r in pools[m]} for m in members}
    aligned = [[by_id[m].get(r["id"]) or {} for m in members] for r in base]
    codes = np.array(
        [[code(x.get("label"), f"member {m}") for m, x in zip(members, xs)] for xs in aligned], dtype=int
    ).reshape(len(base), len(members))
    conf = np.array(
        [
            [np.nan if x.get("label") is None or x.get("confidence") is None else float(x["confidence"]) for x in xs]
            for xs in aligned
        ],
        dtype=float,
    ).reshape(len(base), len(members))
    gold = np.array([code(r.get("gold_label"), "gold") for r in base], dtype=int)
    return MemberLabels(base, codes, conf, gold)


# --- the four posteriors -----------------------------------------------------------------------


def linear_pool(codes: np.ndarray, weights: np.ndarray, n_labels: int) -> np.ndarray:
    """Mean over all members of (w on the member's label, 1 − w spread evenly); missing: even spread."""
    present = codes != MISSING
    w = np.where(present, weights, 0.0)
    posterior = np.repeat(((1.0 - w) / n_labels).sum(axis=1, keepdims=True), n_labels, axis=1)
    rows = np.nonzero(present)
    np.add.at(posterior, (rows[0], codes[rows]), w[rows])
    return posterior / codes.shape[1]


def vote_weights(data: MemberLabels, cfg: AggregateParams, name: str) -> np.ndarray:
    """``confidence``'s weights: each label's confidence; a label without one takes
    ``confidence_fallback`` or stops the vote with an error naming the members."""
    lacking = (data.codes != MISSING) & np.isnan(data.confidences)
    if lacking.any() and cfg.confidence_fallback is None:
        counts = {m: int(n) for m, n in zip(cfg.members, lacking.sum(axis=0)) if n}
        raise InputDataError(
            f"aggregate {name!r} is weighted, but {counts} labels of these members have no confidence "
            f"(their answers came without logprobs). Set aggregates.{name}.confidence_fallback to the "
            f"weight such a vote should get, use method: majority, or turn logprobs on for that annotator"
        )
    return np.where(lacking, cfg.confidence_fallback or 0.0, np.nan_to_num(data.confidences))


def confusion_counts(codes: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """members × truth × said: Σ over rows of P(row's truth = t) for rows where the member said o.
    ``truth`` is a rows × labels matrix of probabilities (one-hot for gold rows)."""
    out = np.zeros((codes.shape[1], n_labels, n_labels))
    for m in range(codes.shape[1]):
        said = codes[:, m] != MISSING
        np.add.at(out[m].T, codes[said, m], truth[said])
    return out


def reliabilities(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Confusion counts → P(said o | truth t) per member, floored at crowd-kit's epsilon."""
    p = np.clip(counts + smoothing, _EPS, None)
    return p / p.sum(axis=2, keepdims=True)


def naive_bayes(codes: np.ndarray, theta: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """P(truth | members' labels) ∝ prior · Π over members who labelled of P(said | truth)."""
    log_post = np.repeat(np.log(np.clip(prior, _EPS, None))[None, :], codes.shape[0], axis=0)
    for m in range(codes.shape[1]):
        said = codes[:, m] != MISSING
        log_post[said] += np.log(theta[m][:, codes[said, m]]).T
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def _fix_known(posterior: np.ndarray, gold: np.ndarray) -> np.ndarray:
    known = gold != MISSING
    posterior[known] = np.eye(posterior.shape[1])[gold[known]]
    return posterior


def dawid_skene(
    codes: np.ndarray,
    n_labels: int,
    gold: np.ndarray | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    smoothing: float = 0.0,
    max_iter: int = EM_MAX_ITER,
    tol: float = EM_TOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for (posterior rows × labels, reliabilities members × truth × said, prior). Rows with a
    gold label (``gold`` ≠ MISSING) keep it as known truth after every E-step. Without ``start``
    (reliabilities, prior) EM starts, as crowd-kit does, from the majority-vote shares."""
    gold = np.full(len(codes), MISSING) if gold is None else gold
    if start is None:
        said = np.nonzero(codes != MISSING)
        votes = np.zeros((len(codes), n_labels))
        np.add.at(votes, (said[0], codes[said]), 1.0)
        posterior = _fix_known(votes / np.maximum(votes.sum(axis=1, keepdims=True), 1.0), gold)
        prior, theta = posterior.mean(axis=0), reliabilities(confusion_counts(codes, posterior, n_labels), smoothing)
    else:
        theta, prior = start
        posterior = np.full((len(codes), n_labels), np.nan)
    for _ in range(max_iter):
        new = _fix_known(naive_bayes(codes, theta, prior), gold)
        prior, theta = new.mean(axis=0), reliabilities(confusion_counts(codes, new, n_labels), smoothing)
        converged = bool(np.all(np.abs(new - posterior) <= tol))
        posterior = new
        if converged:
            break
    return posterior, theta, prior


def _audit_start(
    audit: MemberLabels, train: np.ndarray, n_labels: int, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reliabilities and class prior from the audit rows in ``train`` (their gold labels)."""
    truth = np.eye(n_labels)[audit.gold[train]]
    theta = reliabilities(confusion_counts(audit.codes[train], truth, n_labels), smoothing)
    prior = truth.sum(axis=0) + smoothing
    return theta, prior / prior.sum()


def _fit(
    method: str, pool: MemberLabels, audit: MemberLabels, train: np.ndarray, n_labels: int, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors of pool and audit rows, reliabilities learned from the audit rows in ``train``."""
    start = _audit_start(audit, train, n_labels, smoothing)
    if method == "audit_weighted":
        return naive_bayes(pool.codes, *start), naive_bayes(audit.codes, *start)
    gold = np.concatenate([np.full(len(pool.codes), MISSING), np.where(train, audit.gold, MISSING)])
    post, _, _ = dawid_skene(np.vstack([pool.codes, audit.codes]), n_labels, gold, start, smoothing)
    return post[: len(pool.codes)], post[len(pool.codes) :]


def posteriors(
    pool: MemberLabels, audit: MemberLabels, cfg: AggregateParams, n_labels: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(pool posterior, audit posterior, each audit row's fold or None). Learned methods label the
    audit out of fold and the pool with the whole audit."""
    if cfg.method not in LEARNED_METHODS:
        weights = (
            (np.ones(pool.codes.shape), np.ones(audit.codes.shape))
            if cfg.method == "majority"
            else (vote_weights(pool, cfg, name), vote_weights(audit, cfg, name))
        )
        return linear_pool(pool.codes, weights[0], n_labels), linear_pool(audit.codes, weights[1], n_labels), None
    if (audit.gold == MISSING).any():
        raise InputDataError(
            f"aggregate {name!r} ({cfg.method}) learns from the audit's gold labels, but "
            f"{int((audit.gold == MISSING).sum())} audit rows have no gold_label"
        )
    if len(audit.rows) < cfg.min_audit(n_labels):
        raise InputDataError(
            f"aggregate {name!r} ({cfg.method}): the audit sample has {len(audit.rows)} rows, "
            f"fewer than the {cfg.min_audit(n_labels)} that {cfg.folds} folds over "
            f"{n_labels} labels need; raise annotate.audit_size or lower aggregates.{name}.folds"
        )
    smoothing = cfg.smoothing
    assert smoothing is not None  # the params validator gives learned methods their default
    everything = np.ones(len(audit.rows), dtype=bool)
    pool_post, _ = _fit(cfg.method, pool, audit, everything, n_labels, smoothing)
    audit_post, fold = np.zeros((len(audit.rows), n_labels)), np.zeros(len(audit.rows), dtype=int)
    splits = KFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed).split(audit.codes)
    for k, (train_idx, test_idx) in enumerate(splits):
        train = np.zeros(len(audit.rows), dtype=bool)
        train[train_idx] = True
        _, held_out = _fit(cfg.method, pool, audit, train, n_labels, smoothing)
        audit_post[test_idx], fold[test_idx] = held_out[test_idx], k
    return pool_post, audit_post, fold


# --- rows ---------------------------------------------------------------------------------------


def decide(posterior: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Winning label index per row (MISSING for a failure) and the failure reason."""
    top = posterior.max(axis=1, keepdims=True)
    tied = np.isclose(posterior, top, rtol=_TIE_RTOL, atol=_TIE_ATOL).sum(axis=1) > 1
    nobody = (codes == MISSING).all(axis=1)
    winner = np.where(tied | nobody, MISSING, posterior.argmax(axis=1))
    reasons = ["no member labelled this pair" if n else "tied vote" if t else None for n, t in zip(nobody, tied)]
    return winner, reasons


def rows_out(
    data: MemberLabels,
    posterior: np.ndarray,
    fold: np.ndarray | None,
    members: Sequence[str],
    labels: Sequence[str],
    name: str,
    method: str,
) -> list[dict]:
    winner, reasons = decide(posterior, data.codes)
    out = []
    for i, row in enumerate(data.rows):
        w = int(winner[i])
        label = labels[w] if w != MISSING else None
        votes = {m: (labels[c] if c != MISSING else None) for m, c in zip(members, data.codes[i])}
        record = {k: v for k, v in row.items() if k not in _DROPPED}
        record.update(
            annotator=name,
            label=label,
            confidence=round(float(posterior[i, w]), 6) if label else None,
            confidence_source=f"vote:{method}" if label else None,
            posterior={lab: round(float(p), 6) for lab, p in zip(labels, posterior[i])},
            agreement=round(sum(v == label for v in votes.values()) / len(members), 6) if label else 0.0,
            votes=votes,
            status="ok" if label else "failed",
            reason=reasons[i],
        )
        if fold is not None:
            record["fold"] = int(fold[i])
        out.append(record)
    return out


def aggregate(
    pools: Mapping[str, Sequence[dict]],
    audits: Mapping[str, Sequence[dict]],
    cfg: AggregateParams,
    name: str,
    labels: Sequence[str],
) -> tuple[list[dict], list[dict]]:
    """The voted pool (one row per id the first member labelled, in its order) and audit sample."""
    pool = member_labels(pools, cfg.members, labels, name)
    audit = member_labels(audits, cfg.members, labels, name)
    pool_post, audit_post, fold = posteriors(pool, audit, cfg, len(labels), name)
    return (
        rows_out(pool, pool_post, None, cfg.members, labels, name, cfg.method),
        rows_out(audit, audit_post, fold, cfg.members, labels, name, cfg.method),
    )


def method_summary(pool_rows: Sequence[dict], audit_rows: Sequence[dict], labels: Sequence[str]) -> dict:
    """Audit accuracy (with a 95 % bootstrap CI over audit rows), macro-F1 and ECE, and pool coverage."""
    gold = [r["gold_label"] for r in audit_rows]
    pred = [r["label"] for r in audit_rows]
    acc, low, high = stats.bootstrap_ci([float(g == p) for g, p in zip(gold, pred)], seed=0)
    ok = [r for r in audit_rows if r["label"] is not None]  # ECE over the labelled rows; none: no ECE
    ece = (
        stats.expected_calibration_error([r["confidence"] for r in ok], [r["label"] == r["gold_label"] for r in ok])
        if ok
        else None
    )
    return {
        "accuracy": round(acc, 6),
        "accuracy_ci": [round(low, 6), round(high, 6)],
        "macro_f1": round(stats.macro_f1(gold, pred, list(labels)), 6),
        "ece": None if ece is None else round(float(ece), 6),
        "coverage": round(sum(r["label"] is not None for r in pool_rows) / len(pool_rows), 6) if pool_rows else None,
    }


def compare_methods(
    pools: Mapping[str, Sequence[dict]],
    audits: Mapping[str, Sequence[dict]],
    cfg: AggregateParams,
    name: str,
    labels: Sequence[str],
) -> dict:
    """Every method on the same members and folds (the configured folds, smoothing and seed, or the
    learned methods' defaults), with each member's own audit accuracy: the report's aggregates table."""
    out: dict = {"method": cfg.method, "members": {}, "methods": {}}
    for m in cfg.members:
        rows = audits[m]
        out["members"][m] = round(stats.accuracy([r["gold_label"] for r in rows], [r["label"] for r in rows]), 6)
    for method in VOTE_METHODS:
        other = cfg.for_method(method)
        try:
            out["methods"][method] = method_summary(*aggregate(pools, audits, other, name, labels), labels)
        except InputDataError as err:  # e.g. confidence without confidences: say why, keep the others
            out["methods"][method] = {"unavailable": str(err).split(". Set")[0]}
    return out
