"""List prices of the paid models the presets name, with the date each was read.

A budget is only as good as its price: ``params`` refuses a ``budget_usd`` without one, and warns
when a configured price is for a model this table does not list, or differs from the table (a block
copied from another model keeps that model's price). Self-hosted models (vLLM, llama.cpp) have no
list price: their cost is the compute the run measures. This module does no I/O; update an entry
(and its date) when the provider's price list changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ListPrice:
    input_per_mtok: float
    output_per_mtok: float
    batch_discount: float
    read_on: str  # when the price was taken from the provider's price list
    source: str


# gpt-4o-mini's launch price (OpenAI, 18 July 2024), unchanged on the pricing page when this
# table was written; the Batch API halves both rates.
LIST_PRICES: dict[str, ListPrice] = {
    "gpt-4o-mini": ListPrice(0.15, 0.60, 0.5, "2024-07-18", "https://openai.com/api/pricing/"),
}
