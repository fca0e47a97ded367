"""Packed forward passes (synthllm.lm_passes) against transformers' own forward pass.

A tiny Gemma 3 (random weights, the real architecture: sliding and full attention layers, a window
of 8 tokens so that it matters, grouped-query attention, Gemma's RMSNorm) reads sequences the
ordinary way, one forward pass each, and packed: several segments per pass, some continuing a
stored prefix. Shared-prefix results must equal unshared ones (float32: within 1e-4; the issue's
exactness bar), and in bfloat16 a segment's results must be the same bit for bit whatever shares
its pass.
"""

from __future__ import annotations

import pytest
import torch

from synthllm.lm_passes import Prefixes, Segment, fuse_rms_norms, packed_passes, use_packed_attention


def tiny_gemma3(dtype: torch.dtype):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=256,
        pad_token_id=0,
    )
    model = Gemma3ForCausalLM(config).to(dtype).eval()
    for p in model.parameters():  # random norms too: a norm weight of 0 would hide a wrong formula
        p.data.normal_(0, 0.3)
    return model


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def reference_states(model, ids: list[int]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [
            h[0].float() for h in model.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        ]


def sequences(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(1, 300, (13,), generator=g).tolist()
    own = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (5, 11, 3, 17)]
    alone = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (9, 14)]
    return prefix, own, alone


def packed_logits(model, prefix, own, alone, chunk=64):
    """Next-token logits at every position of every segment: rows continuing ``prefix`` and rows alone."""
    prefixes = Prefixes()
    with torch.inference_mode():
        for _ in packed_passes(model, [Segment(prefix)], prefixes, 0, record=True, logits_at=[[]], chunk=chunk):
            pass
        segments = [Segment(x, 0) for x in own] + [Segment(x) for x in alone]
        at = [list(range(len(s.tokens))) for s in segments]
        out: dict[int, torch.Tensor] = {}
        for members, _, result in packed_passes(model, segments, prefixes, 0, logits_at=at, chunk=chunk):
            rows = result.logits[0].float().split([len(at[k]) for k in members])
            out.update(zip(members, rows))
    return [out[k] for k in range(len(segments))]


def test_shared_prefix_logits_equal_one_pass_per_sequence_within_1e_4():
    model = tiny_gemma3(torch.float32)
    prefix, own, alone = sequences()
    expected = [reference_logits(model, prefix + x)[len(prefix) :] for x in own]
    expected += [reference_logits(model, x) for x in alone]
    fuse_rms_norms(model)
    use_packed_attention(model)
    got = packed_logits(model, prefix, own, alone)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert float((e - g).abs().max()) < 1e-4
    # and the test can tell: a prefix that is not read moves the logits far beyond that
    wrong = reference_logits(model, own[0])
    assert float((wrong - got[0]).abs().max()) > 1e-2


def test_prefix_hidden_states_equal_one_pass_per_sequence():
    """What the Gemma state cache stores: every layer's states of a premise read as a prefix and of a
    hypothesis continuing it, as in one pass over the pair."""
    model = tiny_gemma3(torch.float32)
    prefix, own, _ = sequences(2)
    expected = [reference_states(model, prefix + x) for x in own]
    body = model.model
    fuse_rms_norms(body)
    use_packed_attention(body)
    prefixes = Prefixes()
    with torch.inference_mode():
        (_, where, out), *_ = list(
            packed_passes(body, [Segment(prefix)], prefixes, 0, record=True, output_hidden_states=True, chunk=32)
        )
        for layer, ref in enumerate(expected[0]):
            assert float((out.hidden_states[layer][0, : len(prefix)] - ref[: len(prefix)]).abs().max()) < 1e-4
        segments = [Segment(x, 0) for x in own]
        for members, where, out in packed_passes(body, segments, prefixes, 0, output_hidden_states=True, chunk=32):
            for k, (a, b) in zip(members, where):
                for layer, ref in enumerate(expected[k]):
                    got = out.hidden_states[layer][0, a:b].float()
                    assert float((got - ref[len(prefix) :]).abs().max()) < 1e-4


@pytest.mark.parametrize("chunk", [64, 48])
def test_bfloat16_segment_results_do_not_depend_on_what_shares_the_pass(chunk):
    model = tiny_gemma3(torch.bfloat16)
    fuse_rms_norms(model)
    use_packed_attention(model)
    prefix, own, alone = sequences(3)
    together = packed_logits(model, prefix, own, alone, chunk)
    for k in range(len(own)):  # each segment packed with nothing else, then in another order
        lone = packed_logits(model, prefix, [own[k]], [], chunk)[0]
        assert torch.equal(lone, together[k])
    reordered = packed_logits(model, prefix, own[::-1], alone[::-1], chunk)
    assert all(torch.equal(a, b) for a, b in zip(reordered[: len(own)], together[: len(own)][::-1]))


def test_fused_rms_norm_is_gemmas_norm():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    norm = Gemma3RMSNorm(64, eps=1e-6).requires_grad_(False)
    norm.weight.data.normal_(0, 0.5)
    x = torch.randn(3, 7, 64) * 30
    expected = norm(x)
    holder = torch.nn.Sequential(norm)
    assert fuse_rms_norms(holder) == 1
    assert float((norm(x) - expected).abs().max()) < 1e-5
    xb = x.bfloat16()
    ref = Gemma3RMSNorm.forward(norm, xb)
    assert float((norm(xb).float() - ref.float()).abs().max()) <= float(ref.float().abs().max()) * 2**-7
