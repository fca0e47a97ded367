"""The backends a generator or an LLM annotator runs on (a local model, an OpenAI-compatible server)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field, model_validator

from synthllm.params.base import Strict
from synthllm.prices import LIST_PRICES

log = logging.getLogger("synthllm.params")  # the logger of the single-module params (log filters)


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
