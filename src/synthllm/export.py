"""Export one annotator's synthetic train/dev split as a Hugging Face dataset and its dataset card.

Pure functions: split rows and the pool's provenance in, a :class:`datasets.DatasetDict` out
(``label`` is a ``ClassLabel`` over the task's labels, text columns named as the task names them);
split rows and the pipeline's
metrics in, a README.md dataset card out. Everything is a function of the inputs alone, so the same
inputs give byte-identical files: the dataset fingerprint is a hash of the rows rather than
something random, and the card carries no dates.

This module deliberately does not write files, does not talk to the Hub, does not re-filter,
relabel or re-split rows (the dataset is exactly what the split stage trained on), and does not
compute any statistic the pipeline has not already written to its metrics.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, NamedSplit, Value
from datasets.table import InMemoryTable

from synthllm.errors import InputDataError
from synthllm.params import GoldParams, TaskParams

SPLITS = ("train", "dev")
NLI = TaskParams()


def features(task: TaskParams) -> Features:
    """Output columns: premise_id/premise for pair tasks only; text columns named by the task."""
    cols: dict = {"id": Value("string")}
    if task.input == "pair":
        cols.update({"premise_id": Value("string"), task.premise_column: Value("string")})
    cols.update(
        {
            task.text_column: Value("string"),
            "label": ClassLabel(names=list(task.labels)),
            "intended_label": Value("string"),
            "confidence": Value("float64"),
        }
    )
    return Features(cols)


FEATURES = features(NLI)
# Counts in metrics/generate.json besides the dropped_<reason> ones (the rest is throughput).
COUNT_KEYS = ("premises", "premises_skipped_leakage", "generated", "kept")
FARSTAIL_URL = "https://github.com/dml-qom/FarsTail"
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
CITATION = """\
@inproceedings{panahi2026synthllm,
  title     = {{SynthLLM}: An {LLM}-based Scalable Synthetic Data Generation Pipeline for Low-Resource Languages},
  author    = {Panahi and Kelleher and Nedumpozhimana},
  booktitle = {Proceedings of the Language Resources and Evaluation Conference (LREC 2026)},
  year      = {2026}
}

@article{amirkhani2023farstail,
  title   = {{FarsTail}: a {Persian} natural language inference dataset},
  author  = {Amirkhani, Hossein and AzariJafari, Mohammad and Pourjafari, Zohreh and
             Faridan-Jahromi, Soroush and Kouhkan, Zeinab and Amirak, Azadeh},
  journal = {Soft Computing},
  year    = {2023},
  doi     = {10.1007/s00500-023-08959-3}
}"""


def _citation(farstail: bool) -> str:
    """The SynthLLM paper, plus FarsTail where its data were used."""
    return CITATION if farstail else CITATION.split("\n\n")[0]


# --- the dataset -----------------------------------------------------------------------------


def _rows_for_features(
    rows: Sequence[dict], premise_ids: Mapping[str, str | None], split: str, task: TaskParams
) -> dict[str, list]:
    feats = features(task)
    columns: dict[str, list] = {name: [] for name in feats}
    for i, row in enumerate(rows, 1):
        if row.get("label") not in task.labels:
            raise InputDataError(
                f"{split} row {i} ({row.get('id')}): label {row.get('label')!r} is not "
                f"one of {list(task.labels)}; the split stage should have dropped it"
            )
        if row["id"] not in premise_ids:
            raise InputDataError(
                f"{split} row {i} ({row['id']}) is not in the annotated pool: the split is "
                "stale, re-run it (dvc repro split)"
            )
        merged = {
            **row,
            "premise_id": premise_ids[row["id"]],
            task.premise_column: row.get("premise"),
            task.text_column: row.get("hypothesis"),
        }
        for name in feats:
            columns[name].append(merged.get(name))
    return columns


def _fingerprint(split: str, columns: Mapping[str, list], feats: Features = FEATURES) -> str:
    # Left to itself, datasets pickles and hashes the in-memory table (library-version dependent);
    # a hash of the rows is stable, and it is what hf/*/state.json records.
    payload = json.dumps(
        {"split": split, "features": feats.to_dict(), "columns": columns}, ensure_ascii=False, sort_keys=True
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def build_dataset(
    splits: Mapping[str, Sequence[dict]],
    annotated: Sequence[dict],
    *,
    task: TaskParams,
    description: str = "",
    farstail: bool = True,
) -> DatasetDict:
    """train/dev rows (as the split stage wrote them) + the annotated pool (for premise_id)."""
    premise_ids: dict[str, str | None] = {r["id"]: r.get("premise_id") for r in annotated}
    feats = features(task)
    info = DatasetInfo(
        description=description,
        citation=_citation(farstail),
        homepage=FARSTAIL_URL if farstail else "",
        license="other",
        features=feats,
    )
    out = {}
    for split in SPLITS:
        columns = _rows_for_features(splits[split], premise_ids, split, task)
        table = pa.Table.from_pydict(feats.encode_batch(columns), schema=feats.arrow_schema)
        out[split] = Dataset(
            InMemoryTable(table), info=info, split=NamedSplit(split), fingerprint=_fingerprint(split, columns, feats)
        )
    return DatasetDict(out)


# --- the dataset card ------------------------------------------------------------------------


@dataclass(frozen=True)
class CardInputs:
    name: str  # the annotator whose labels these are
    splits: Mapping[str, Sequence[dict]]
    annotated: Sequence[dict]  # the whole pool of this annotator (provenance)
    generate_stats: Mapping  # metrics/generate.json
    annotator_metrics: Mapping  # metrics/annotators/<name>.json
    quality: Mapping  # metrics/annotation_quality.json
    task: TaskParams  # what is classified: labels, columns, language
    generator_model: str | None = None  # human name of the local generator, if any
    filters: Mapping = field(default_factory=dict)  # generate.filters thresholds from params
    gold: GoldParams = GoldParams()  # FarsTail, or a local gold folder

    @property
    def farstail(self) -> bool:
        return self.gold.source == "farstail"

    @property
    def title(self) -> str:
        return "Persian NLI" if self.farstail else f"{self.task.language} {self.task.name}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def _generators(inputs: CardInputs) -> list[str]:
    ids = {r["id"] for split in SPLITS for r in inputs.splits[split]}
    used = Counter(r.get("generator") for r in inputs.annotated if r["id"] in ids)
    local = f" (local model: {inputs.generator_model})" if inputs.generator_model else ""
    return [
        f"`{g}`{local if str(g).startswith('transformers:') else ''} — {n} pairs"
        for g, n in sorted(used.items(), key=lambda kv: str(kv[0]))
    ]


def _uses_gemma(inputs: CardInputs) -> bool:
    names = [str(r.get("generator")) for r in inputs.annotated] + [inputs.name, inputs.generator_model or ""]
    return any("gemma" in n.lower() for n in names)


def _header(inputs: CardInputs) -> list[str]:
    n = sum(len(inputs.splits[s]) for s in SPLITS)
    licence = (
        ["license: other", "license_name: apache-2.0-and-gemma-terms-of-use", f"license_link: {GEMMA_TERMS_URL}"]
        if _uses_gemma(inputs)
        else ["license: other", "license_name: apache-2.0-and-generator-terms"]
    )
    task_ids = ["task_ids:", "- natural-language-inference"] if inputs.task.name == "nli" else []
    source = ["source_datasets:", "- extended|farstail"] if inputs.farstail else []
    return [
        "---",
        *licence,
        "language:",
        f"- {inputs.task.language}",
        "task_categories:",
        "- text-classification",
        *task_ids,
        "multilinguality:",
        "- monolingual",
        "size_categories:",
        f"- {_size_category(n)}",
        *source,
        f"pretty_name: SynthLLM {inputs.title} ({inputs.name} labels)",
        "tags:",
        "- synthetic",
        "- llm-generated",
        "---",
        "",
    ]


def _generation(inputs: CardInputs) -> list[str]:
    ids = {r["id"] for split in SPLITS for r in inputs.splits[split]}
    versions = sorted({str(r.get("prompt_version")) for r in inputs.annotated if r["id"] in ids})
    stats = inputs.generate_stats
    counts = [(k, stats[k]) for k in sorted(stats) if k in COUNT_KEYS or k.startswith("dropped_")]
    thresholds = ", ".join(f"`{k}` = {v}" for k, v in sorted(inputs.filters.items()))
    gold = inputs.gold.name
    what = (
        f"hypotheses for {gold}-train premises"
        if inputs.task.input == "pair"
        else f"texts, with few-shot examples from {gold} train"
    )
    lines = [
        "## Generation",
        "",
        f"A small language model wrote {what}, each conditioned on a target label.",
        "",
        "Generator(s):",
        "",
        *[f"- {g}" for g in _generators(inputs)],
        "",
        "Prompt version(s): " + ", ".join(f"`{v}`" for v in versions),
        "",
        "### Filters and counts",
        "",
        "Each generated text was checked in a fixed order (backend error, truncated, empty, "
        f"{inputs.task.script}-script ratio, too short, too long, copy of its premise, text also in "
        f"{gold} val/test, duplicate) and a dropped one is counted under the first check it failed."
        + (f" Thresholds: {thresholds}." if thresholds else ""),
        "",
        "| count | pairs |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in counts]
    return lines + [""]


def _label_section(inputs: CardInputs) -> list[str]:
    labels = inputs.task.labels
    lines = [
        "## Splits and label distribution",
        "",
        "| split | rows | " + " | ".join(labels) + " |",
        "|---" * (2 + len(labels)) + "|",
    ]
    for split in SPLITS:
        c = Counter(r["label"] for r in inputs.splits[split])
        n = len(inputs.splits[split])
        cells = [f"{c.get(lab, 0)} ({_pct(c.get(lab, 0) / n if n else None)})" for lab in labels]
        lines.append(f"| {split} | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def _annotation(inputs: CardInputs) -> list[str]:
    m = inputs.annotator_metrics
    audit, pool = m.get("audit", {}), m.get("pool", {})
    ece = audit.get("ece")
    lines = [
        "## Annotation",
        "",
        f"Labels come from the annotator **{inputs.name}**; the generator's target label is kept as "
        "`intended_label` (provenance, not a gold label).",
        "",
        f"- audit: {audit['not_applicable']}"
        if audit.get("not_applicable")
        else f"- audit on {audit.get('n', '–')} {inputs.gold.name}-val rows: accuracy {_pct(audit.get('accuracy'))}, "
        f"macro-F1 {_pct(audit.get('macro_f1'))}, ECE {'–' if ece is None else f'{ece:.3f}'}",
        f"- pool: {pool.get('n', '–')} pairs, {pool.get('failed', '–')} failed (dropped), agreement with "
        f"the intended label {_pct(pool.get('agreement_with_intended'))}",
    ]
    flips = pool.get("prompt_order_flip_rate")
    if flips:
        lines.append(
            f"- prompt-order flip rate (share of pairs whose label changes under the reordered "
            f"annotation prompt): {_pct(flips.get('overall'))}"
        )
    return lines + [""] + _agreement(inputs)


def _agreement(inputs: CardInputs) -> list[str]:
    q = inputs.quality
    kappas = {pair: k for pair, k in sorted(q.get("pairwise_kappa", {}).items()) if inputs.name in pair.split("__")}
    if not kappas:
        return ["Inter-annotator agreement: not available (only one active annotator).", ""]
    lines = [
        f"Agreement with the other annotators on the {q.get('n_shared', '–')} shared pairs (Cohen's kappa):",
        "",
        "| annotators | kappa |",
        "|---|---|",
    ]
    lines += [f"| {pair.replace('__', ' vs ')} | {'–' if k is None else f'{k:.3f}'} |" for pair, k in kappas.items()]
    fleiss = q.get("fleiss_kappa")
    if fleiss is not None:
        lines += ["", f"Fleiss' kappa over all {len(q.get('annotators', []))} annotators: {fleiss:.3f}"]
    return lines + [""]


def _licence(inputs: CardInputs) -> list[str]:
    gemma = (
        f"Hypotheses (and, for a Gemma annotator, labels) generated with a Gemma model are subject to "
        f"the [Gemma Terms of Use]({GEMMA_TERMS_URL}) and its Prohibited Use Policy."
    )
    source = (
        f"- Premises come from [FarsTail]({FARSTAIL_URL}), released under the Apache License 2.0."
        if inputs.farstail
        else "- Few-shot examples (and premises, for pair tasks) come from the local gold data: its "
        "licence applies to them."
    )
    return [
        "## Licence",
        "",
        source,
        f"- {gemma}"
        if _uses_gemma(inputs)
        else "- Hypotheses and labels are model outputs: check the terms of use of the generator and "
        "annotator models listed above before redistributing.",
        "- Labels are machine annotations, not human judgements; see the audit figures above.",
        "",
    ]


def dataset_card(inputs: CardInputs) -> str:
    n = {s: len(inputs.splits[s]) for s in SPLITS}
    if inputs.farstail:
        what = (
            f"Persian (Farsi) natural language inference pairs: FarsTail premises with LLM-generated "
            f"hypotheses, labelled by `{inputs.name}`. {n['train']} train and {n['dev']} dev pairs. "
        )
    else:
        what = (
            f"LLM-generated {inputs.task.language} examples for the task `{inputs.task.name}` "
            f"(labels: {', '.join(inputs.task.labels)}), labelled by `{inputs.name}`. "
            f"{n['train']} train and {n['dev']} dev rows. "
        )
    intro = [
        f"# SynthLLM {inputs.title} — synthetic {'pairs' if inputs.task.input == 'pair' else 'texts'} "
        f"labelled by {inputs.name}",
        "",
        what + "Produced by the SynthLLM pipeline.",
        "",
        'Load with `datasets.load_from_disk("hf")` or '
        '`datasets.load_dataset("parquet", data_files={"train": "parquet/train.parquet", '
        '"dev": "parquet/dev.parquet"})`.',
        "",
    ]
    body = (
        intro
        + _generation(inputs)
        + _label_section(inputs)
        + _annotation(inputs)
        + _licence(inputs)
        + ["## Citation", "", "```bibtex", _citation(inputs.farstail), "```", ""]
    )
    return "\n".join(_header(inputs) + body)
