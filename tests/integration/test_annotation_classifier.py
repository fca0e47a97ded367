"""The trained-classifier annotator on the real gold split (answer parsing is tests/unit/test_annotation.py)."""

from synthllm.annotation import (
    annotate_rows,
    answer_format,
    build_requests,
    parse_result,
)
from synthllm.backends import run_requests
from synthllm.classifiers import train_regime
from synthllm.classifiers.backend import ClassifierBackend
from synthllm.io import read_frame
from synthllm.params import (
    NLI_LABELS,
    AnnotatorParams,
    SklearnClassifierParams,
)


def test_classifier_annotator_labels_every_row(gold_dir, tmp_path):
    gold = read_frame(gold_dir / "train.jsonl").head(600)
    clf, _ = train_regime(
        "gold_only",
        gold,
        None,
        SklearnClassifierParams(n_features=2**14),
        gold_epochs=2,
        synthetic_epochs=1,
        seed=0,
        labels=NLI_LABELS,
    )
    clf.save(tmp_path / "clf")
    backend = ClassifierBackend(tmp_path / "clf")
    cfg = AnnotatorParams(kind="classifier", model_dir=str(tmp_path / "clf"))
    val = read_frame(gold_dir / "val.jsonl").head(50).to_dict("records")
    results, stats = run_requests(
        backend, build_requests(val, cfg, None, [], 0, labels=NLI_LABELS, task="nli"), progress=False
    )
    fmt = answer_format(cfg, None, NLI_LABELS, "nli")
    rows = annotate_rows(val, [parse_result(r, fmt) for r in results], "classifier")
    assert len(rows) == 50 and stats.failures == 0
    assert all(
        r["label"] in ("entailment", "contradiction", "neutral")
        and 0.33 < r["confidence"] <= 1
        and r["confidence_source"] == "classifier"
        for r in rows
    )
