import pytest
from sklearn.metrics import cohen_kappa_score

from synthllm.params import NLI_LABELS
from synthllm.quality import agreement_rows, audit_metrics, cross_annotator, vote_on_audit

GOLD = ["entailment", "contradiction", "neutral", "neutral", "entailment"]


def _audit(labels, confs):
    return [
        {"id": f"v{i}", "gold_label": g, "label": lab, "confidence": c, "status": "ok" if lab else "failed"}
        for i, (g, lab, c) in enumerate(zip(GOLD, labels, confs))
    ]


def test_audit_metrics_accuracy_failures_flips_and_intended_agreement():
    audit = _audit(["entailment", "neutral", "neutral", None, "entailment"], [0.9, 0.6, 0.8, None, 0.7])
    pool = [
        {"id": "s1", "intended_label": "entailment", "label": "entailment", "label_variant": "neutral", "status": "ok"},
        {
            "id": "s2",
            "intended_label": "neutral",
            "label": "contradiction",
            "label_variant": "contradiction",
            "status": "ok",
        },
    ]
    m = audit_metrics(audit, pool, NLI_LABELS)
    assert m["audit"]["accuracy"] == pytest.approx(3 / 5)  # a failed row counts as wrong
    assert m["audit"]["failed"] == 1
    assert m["audit"]["confusion"][1] == [0, 0, 1]  # gold contradiction labelled neutral
    assert m["pool"]["agreement_with_intended"] == 0.5
    assert m["pool"]["prompt_order_flip_rate"]["overall"] == 0.5
    assert m["pool"]["prompt_order_flip_rate"]["by_class"] == {"entailment": 1.0, "contradiction": 0.0}


def test_cross_annotator_kappa_matches_sklearn_and_vote_on_audit():
    a = ["entailment", "neutral", "neutral", "contradiction", "entailment"]
    b = ["entailment", "neutral", "contradiction", "contradiction", "neutral"]
    pools = {n: [{"id": f"s{i}", "label": lab} for i, lab in enumerate(ls)] for n, ls in (("a", a), ("b", b))}
    out = cross_annotator(pools, NLI_LABELS)
    assert out["pairwise_kappa"]["a__b"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)
    assert out["n_shared"] == 5
    rows = agreement_rows(pools)[("a", "b")]
    assert rows[2] == {"actual": "neutral", "predicted": "contradiction"} and len(rows) == 5
    audits = {
        "x": _audit(GOLD, [0.9] * 5),
        "y": _audit(["neutral"] * 5, [0.2] * 5),
        "z": _audit(["neutral"] * 5, [0.2] * 5),
    }
    vote = vote_on_audit(audits, NLI_LABELS)
    assert vote["majority_accuracy"] == pytest.approx(2 / 5)  # y and z outvote x
    assert vote["weighted_majority_accuracy"] == pytest.approx(1.0)  # x's confidence outweighs them
