"""The classifiers the train stage and the classifier annotator train (sklearn, HF, Gemma attention)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from synthllm.params.base import GENERATOR_DIR, Strict


class SklearnClassifierParams(Strict):
    kind: Literal["sklearn_sgd"] = "sklearn_sgd"
    n_features: int = Field(2**18, ge=2**10, le=2**24)
    alpha: float = Field(1e-4, gt=0)
    batch_size: int = Field(
        1 << 16,
        ge=1,
        description="Rows per partial_fit call. SGD steps one row at a time either way; each call also "
        "touches every weight once, so small calls are slow (256: 12 s per 8 gold epochs, 65,536: 1 s).",
    )


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


class GemmaHeadParams(Strict):
    """Hyper-parameters chosen on FarsTail val (see ``benchmarks/results/classifier_candidates.md``)."""

    kind: Literal["gemma_head"] = "gemma_head"
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
    extract_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="dtype of the Gemma forward passes that fill the state cache (bfloat16: about 2.6x "
        "faster on a CPU with bf16 matmuls; it is part of the cache key).",
    )
    extract_batch_tokens: int = Field(
        2048, ge=64, le=1 << 20, description="Tokens per packed Gemma forward pass when filling the cache."
    )
    threads: int | None = Field(None, ge=1, le=256, description="torch threads; null: torch's default.")

    @field_validator("layers")
    @classmethod
    def _layers_ok(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"layers {v}: distinct non-negative layer numbers")
        return sorted(v)


ClassifierParams = Annotated[
    SklearnClassifierParams | HFClassifierParams | GemmaHeadParams, Field(discriminator="kind")
]
