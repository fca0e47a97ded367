"""The Gemma-state head classifier's params (no model; training is tests/integration/test_gemma_heads_training.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from synthllm.params import GemmaHeadParams


def test_params_forbid_unknown_keys_and_bad_layers():
    with pytest.raises(ValidationError):
        GemmaHeadParams(layer=6)
    with pytest.raises(ValidationError):
        GemmaHeadParams(layers=[6, 6])
    assert GemmaHeadParams().model_dir == "models/generator"


def test_exact_matches_equal_np_isin_row_by_row():
    import numpy as np

    from synthllm.classifiers.gemma_heads import _exact_matches

    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 50, n).astype(np.int32) for n in (0, 1, 7, 30, 12, 0, 5)]
    others = [rng.integers(0, 50, n).astype(np.int32) for n in (4, 0, 9, 25, 12, 3, 0)]
    tokens.append(np.array([262_143, 7, 7], np.int32))  # large ids, repeats
    others.append(np.array([262_143, 6], np.int32))
    flags = _exact_matches(tokens, others)
    assert len(flags) == len(tokens)
    for t, o, f in zip(tokens, others, flags):
        expected = np.isin(t, o).astype(np.float32)
        assert f.dtype == expected.dtype and f.shape == expected.shape
        np.testing.assert_array_equal(f, expected)
    assert _exact_matches([], []) == []


def test_dropout_drops_p_and_keeps_the_expectation():
    """The heads' integer-mask dropout: a share p of inputs zeroed, the rest scaled by 1/(1-p) (so the
    expectation is kept), nothing dropped in eval mode."""
    import torch

    from synthllm.classifiers.gemma_heads import Dropout

    torch.manual_seed(0)
    x = torch.rand(200, 1000) + 0.5
    d = Dropout(0.3).train()
    y = d(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.3) < 0.005
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert abs(float(y.mean() / x.mean()) - 1) < 0.01
    assert torch.equal(d.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    assert not torch.equal(d.train()(x), d.train()(x))  # a new mask per call


def test_adamw_is_torchs_adamw_bit_for_bit():
    """The heads' AdamW (no torch.optim: building one imports torch._dynamo, 1.4 s a process) must
    update exactly as torch.optim.AdamW with the same LambdaLR schedule, a frozen parameter (no
    gradient) included, and resume from its state dict in step."""
    import copy

    import torch
    from torch import nn

    from synthllm.classifiers.gemma_heads import AdamW

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))
    frozen = nn.Parameter(torch.zeros(4))  # never in the graph: skipped by both
    ours_model = copy.deepcopy(model)
    ref = torch.optim.AdamW([*model.parameters(), frozen], lr=0.01, weight_decay=0.01)
    total, warm = 30, 5
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / total))
    ours = AdamW([*ours_model.parameters(), frozen], lr=0.01, weight_decay=0.01)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for step in range(total):
        if step == 12:  # a snapshot and restore midway changes nothing
            saved = copy.deepcopy(ours.state_dict())
            ours = AdamW([*ours_model.parameters(), frozen], lr=0.0, weight_decay=0.01)
            ours.load_state_dict(saved)
        for m, opt in ((model, ref), (ours_model, ours)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[step % 8 :: 2]), y[step % 8 :: 2]).backward()
        ref.step()
        sched.step()
        ours.lr = 0.01 * min(1.0, (step + 1) / warm) * max(0.0, 1.0 - step / total)
        ours.step()
    for a, b in zip(model.parameters(), ours_model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(frozen, torch.zeros(4)) and len(ours.state) == 4  # the frozen one has no state
