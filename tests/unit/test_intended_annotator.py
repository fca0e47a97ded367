"""The intended annotator: the generator's intended label as a $0 annotator, with no audit."""

import pytest

from synthllm.cascade import row_cost
from synthllm.errors import InputDataError
from synthllm.labelling import label_by_construction
from synthllm.params import NLI_LABELS
from synthllm.quality import NO_AUDIT, audit_metrics, vote_on_audit
from synthllm.reporting import charts, curves, markdown

POOL = [
    {"id": "s1", "premise": "p", "hypothesis": "h1", "intended_label": "entailment"},
    {"id": "s2", "premise": "p", "hypothesis": "h2", "intended_label": "contradiction"},
    {"id": "s3", "premise": "q", "hypothesis": "h3", "intended_label": "neutral"},
]


def test_labels_are_the_intended_ones_at_no_cost():
    done = label_by_construction(POOL, "intended", NLI_LABELS)
    (rows,) = done.rows
    assert len(rows) == len(POOL)
    assert [r["label"] for r in rows] == [r["intended_label"] for r in POOL]
    assert {(r["confidence"], r["status"], r["annotator"]) for r in rows} == {(1.0, "ok", "intended")}
    assert (done.run.requests, done.run.sent, done.run.cost_usd) == (0, 0, 0.0)


def test_a_row_without_intended_label_is_named():
    pool = [*POOL, {"id": "s9", "premise": "p", "hypothesis": "h9"}]
    with pytest.raises(InputDataError, match=r"\['s9'\].*intended_label|intended_label.*\['s9'\]"):
        label_by_construction(pool, "intended", NLI_LABELS)


def test_an_intended_label_outside_the_task_is_named():
    pool = [*POOL, {"id": "s9", "premise": "p", "hypothesis": "h9", "intended_label": "maybe"}]
    with pytest.raises(InputDataError, match=r"\['maybe'\] are not in task.labels"):
        label_by_construction(pool, "intended", NLI_LABELS)


def _metrics():
    rows = label_by_construction(POOL, "intended", NLI_LABELS).rows[0]
    return {**audit_metrics([], rows, NLI_LABELS), "run": label_by_construction(POOL, "x", NLI_LABELS).run.as_dict()}


def test_no_audit_means_no_accuracy_and_says_why():
    m = _metrics()
    assert m["audit"]["n"] == 0 and m["audit"]["not_applicable"] == NO_AUDIT
    assert m["audit"]["accuracy"] is None and m["audit"]["macro_f1"] is None and m["audit"]["ece"] is None
    assert m["pool"]["n"] == 3 and m["pool"]["failed"] == 0 and m["pool"]["agreement_with_intended"] == 1.0
    assert row_cost(m).usd == 0.0


def _audit(label):
    return [
        {"id": f"v{i}", "gold_label": "neutral", "label": label, "confidence": 0.9, "status": "ok"} for i in range(3)
    ]


def test_vote_on_audit_leaves_out_an_annotator_without_audit():
    vote = vote_on_audit({"a": _audit("neutral"), "b": _audit("neutral"), "intended": []}, NLI_LABELS)
    assert vote["members"] == ["a", "b"] and vote["without_audit"] == ["intended"]
    assert vote["majority_accuracy"] == 1.0
    alone = vote_on_audit({"a": _audit("neutral"), "intended": []}, NLI_LABELS)
    assert "unavailable" in alone and "majority_accuracy" not in alone


def test_report_shows_a_dash_and_the_reason(tmp_path):
    other = {**audit_metrics(_audit("neutral"), [], NLI_LABELS), "run": {}}
    annotators = {"intended": _metrics(), "gemma": other}
    quality = {
        "pairwise_kappa": {},
        "vote_on_audit": vote_on_audit({"gemma": _audit("neutral"), "intended": []}, NLI_LABELS),
    }
    text = "\n".join(markdown.annotators_section(annotators, quality, NLI_LABELS))
    row = next(line for line in text.splitlines() if line.startswith("| intended |"))
    assert "| 0 | – (no audit) | – | – |" in row
    assert f"intended: audit {NO_AUDIT}." in text and "No majority vote on the audit sample" in text
    charts.annotator_confusion_heatmaps(annotators, tmp_path / "c.png", NLI_LABELS)
    three = {"a": _audit("neutral"), "b": _audit("neutral"), "intended": []}
    quality["vote_on_audit"] = vote_on_audit(three, NLI_LABELS)
    text = "\n".join(markdown.annotators_section(annotators, quality, NLI_LABELS))
    assert "Majority vote of a, b on the audit sample (intended left out: no audit): 100.0 %" in text
    table = curves.frontier_table(annotators, ["gemma", "intended"], {}, {})
    assert list(table["annotator"]) == ["gemma"]
