"""Packed forward passes of a transformers causal LM: many token sequences ("segments") in one row
of CHUNK tokens, each attending to its own tokens and to the stored prefix it continues, never to
another segment. Linear layers see every token at one shape (rows of CHUNK tokens, their measured
best on a 2-core CPU), and attention runs per segment, at a shape of that segment alone, so a
segment's results do not depend on what shares its pass: scoring and state extraction stay
reproducible row by row, whatever the run. A prefix (few-shot examples, a premise) is computed once
and read by every segment that continues it.

Used by the local backend (scoring, and prefills of :mod:`synthllm.backends.local_engine`) and by the
Gemma state cache (:mod:`synthllm.classifiers.gemma_states`). Importing it does not import
transformers (train and evaluate stages that never run the LM do not pay for that).

What it deliberately does not do: sample, keep a cache between calls, or batch attention across
segments (that would make a segment's rounding depend on its neighbours).
"""

from __future__ import annotations

import contextvars
import functools
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def fuse_rms_norms(model) -> int:
    """Gemma 3's RMSNorm as one fused kernel (``F.rms_norm``: the same float32 arithmetic, in one pass
    instead of eight elementwise ones): 15 % faster bf16 prefill on a 2-core CPU, the same logits
    (tests/integration/test_local_backend.py). Other models are left as they are; returns how many
    norms were fused."""
    fused = 0
    for module in model.modules():
        if type(module).__name__ == "Gemma3RMSNorm":
            module.forward = types.MethodType(_gemma3_rms_norm, module)
            fused += 1
    return fused


def _gemma3_rms_norm(self, x: torch.Tensor) -> torch.Tensor:
    # Gemma 3 scales by (1 + weight), in float32, then casts back (transformers' Gemma3RMSNorm)
    return F.rms_norm(x.float(), (x.shape[-1],), 1.0 + self.weight.float(), self.eps).type_as(x)


def text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


CHUNK = 2048  # tokens per packed pass: linear layers at their measured best, one shape for every pass


@dataclass(frozen=True)
class Segment:
    """A sequence in a packed pass: its own tokens, and the stored prefix it continues (``prefix``:
    an index into the :class:`Prefixes` of the pass, -1 for none; its tokens then start at position
    0, else right after the prefix)."""

    tokens: Sequence[int]
    prefix: int = -1


class Prefixes:
    """Keys and values of prefixes (token sequences that several segments continue, such as a
    premise or few-shot examples), per layer, computed once by a packed pass that records them."""

    def __init__(self) -> None:
        self.keys: dict[int, list[torch.Tensor]] = {}
        self.values: dict[int, list[torch.Tensor]] = {}
        self.lengths: list[int] = []


@dataclass
class _Plan:
    spans: list[tuple[int, int, int, int]]  # (start, end, prefix index or -1, prefix length)
    prefixes: Prefixes
    record: bool  # a prefix pass: every span's keys and values become a prefix


_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("synthllm_packed_plan", default=None)
PACKED = "synthllm_packed"


class _PackedCache:
    """What attention layers call ``cache.update`` on in a packed pass: it records a prefix pass's keys
    and values, and otherwise hands the chunk's own keys on (the attention reads the prefixes)."""

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        plan = _PLAN.get()
        if plan is not None and plan.record:
            keys = plan.prefixes.keys.setdefault(layer_idx, [])
            values = plan.prefixes.values.setdefault(layer_idx, [])
            for start, end, _, _ in plan.spans:
                keys.append(key[0, :, start:end].clone())
                values.append(value[0, :, start:end].clone())
        return key, value


def _packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention of a packed pass: each segment's queries read its prefix's keys and its own (causal,
    within ``sliding_window`` when the layer has one), one ``scaled_dot_product_attention`` per
    segment, whose shape depends on that segment alone. Outside a packed pass: transformers' sdpa."""
    plan = _PLAN.get()
    if plan is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    window = kwargs.get("sliding_window")
    layer, rep = module.layer_idx, query.shape[1] // key.shape[1]
    out = query.new_zeros(query.shape)
    for start, end, g, plen in plan.spans:
        k, v = key[:, :, start:end], value[:, :, start:end]
        if plen:
            k = torch.cat([plan.prefixes.keys[layer][g][None], k], 2)
            v = torch.cat([plan.prefixes.values[layer][g][None], v], 2)
        # grouped-query attention in the kernel: 3x faster than repeating the key/value heads, the
        # same values
        out[:, :, start:end] = F.scaled_dot_product_attention(
            query[:, :, start:end],
            k,
            v,
            attn_mask=_segment_mask(end - start, plen, window),
            scale=scaling,
            enable_gqa=rep > 1,
        )
    return out.transpose(1, 2).contiguous(), None


@functools.lru_cache(maxsize=512)
def _segment_mask(n: int, prefix: int, window: int | None) -> torch.Tensor:
    """queries × (prefix + own) keys: the prefix and own keys up to the query (within the window)."""
    q = prefix + torch.arange(n)
    k = torch.arange(prefix + n)
    allowed = k[None, :] <= q[:, None]
    if window:
        allowed &= k[None, :] > q[:, None] - window
    return allowed


def use_packed_attention(model) -> None:
    """Route the model's attention through :func:`_packed_attention` (transformers' sdpa outside packed
    passes, so generation and ordinary forward passes with explicit 4-D masks are unchanged)."""
    from transformers import AttentionInterface  # here: importing this module must not load transformers

    AttentionInterface.register(PACKED, _packed_attention)
    model.set_attn_implementation(PACKED)


def _chunks(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Segments (by index, in order) packed greedily into passes of ``size`` tokens; a longer segment
    gets a pass of its own, as wide as it needs (a multiple of ``size``)."""
    chunks: list[list[int]] = []
    used = size
    for i, n in enumerate(lengths):
        if used + n > size:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += n
    return chunks


def packed_passes(
    model,
    segments: Sequence[Segment],
    prefixes: Prefixes,
    pad: int,
    record: bool = False,
    logits_at: Sequence[Sequence[int]] | None = None,
    chunk: int = CHUNK,
    **kwargs,
) -> Iterator[tuple[list[int], list[tuple[int, int]], Any]]:
    """Forward passes over ``segments`` packed into rows of ``chunk`` tokens: per pass, the segments it
    holds (indices), where each sits in the row (start, end), and the model's output. ``logits_at``:
    per segment, the positions (in the segment) whose next-token logits the output holds, in segment
    order (a causal LM); ``kwargs`` go to the model (e.g. ``output_hidden_states``). A segment's
    tokens are computed the same whatever shares its pass: linear layers see every token at one shape,
    and attention is per segment. With ``record``, every segment becomes a prefix (in order)."""
    lengths = [len(s.tokens) for s in segments]
    for members in _chunks(lengths, chunk):
        width = max(chunk, -(-sum(lengths[i] for i in members) // chunk) * chunk)
        ids = torch.full((1, width), pad, dtype=torch.long)
        positions = torch.zeros((1, width), dtype=torch.long)
        spans, where, at = [], [], 0
        for i in members:
            seg, n = segments[i], lengths[i]
            plen = prefixes.lengths[seg.prefix] if seg.prefix >= 0 else 0
            ids[0, at : at + n] = torch.tensor(list(seg.tokens), dtype=torch.long)
            positions[0, at : at + n] = plen + torch.arange(n)
            spans.append((at, at + n, seg.prefix, plen))
            where.append((at, at + n))
            at += n
        if logits_at is not None:
            at_rows = [a + r for i, (a, _) in zip(members, where) for r in logits_at[i]]
            kwargs["logits_to_keep"] = torch.tensor(at_rows, dtype=torch.long)
        token = _PLAN.set(_Plan(spans, prefixes, record))
        try:
            out = model(input_ids=ids, position_ids=positions, cache=_PackedCache(), use_cache=True, **kwargs)
        finally:
            _PLAN.reset(token)
        if record:
            prefixes.lengths += [lengths[i] for i in members]
        yield members, where, out
