"""The local generator's fast nucleus sampler against the full-sort nucleus it replaces.

The fast path looks for the nucleus among the top-k tokens, then among the tokens above a
probability floor, and sorts the whole vocabulary only when neither holds ``top_p`` of the mass.
Each path must give the full sort's nucleus (same tokens, same probabilities), and draws from it
must follow the renormalised nucleus probabilities (a chi-square test over many draws).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from synthllm.backends.local_engine import NucleusSampler

VOCAB = 262_144  # Gemma 3's vocabulary: the floors are absolute probabilities, so its size matters


def full_sort_nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: sort the whole vocabulary, keep the smallest prefix reaching top_p."""
    p, order = probs.sort(descending=True)
    keep = (p.cumsum(0) - p) < top_p
    return p[keep], order[keep]


def logits(kind: str, rows: int, seed: int) -> torch.Tensor:
    """Peaked (nucleus in the top-k), spread (beyond the top-k, above the floor) and heavy-tailed
    (a quarter of the mass on tokens below every floor: only the full sort finds the nucleus)
    next-token distributions."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, VOCAB, generator=g)
    if kind == "heavy_tail":
        # 100 tokens hold ~76 %, the other 262,044 about 0.9e-6 each (~24 %)
        tail = torch.full((rows, VOCAB), 0.9e-6).log() + 0.01 * base
        tail[:, :100] = torch.tensor(0.764 / 100).log() + 0.1 * base[:, :100]
        return tail
    return base * {"peaked": 6.0, "spread": 2.2}[kind]


@pytest.mark.parametrize("kind, path", [("peaked", "top_k"), ("spread", "floor"), ("heavy_tail", "full")])
def test_every_path_gives_the_full_sort_nucleus(kind, path):
    top_p = 0.95
    probs = torch.softmax(logits(kind, 6, seed=3), -1)
    sampler = NucleusSampler(temperature=1.0, top_p=top_p)
    fast_p, fast_idx = sampler.nucleus(probs)
    taken = {"top_k": 6 - sampler.floor_sorts - sampler.full_sorts, "floor": sampler.floor_sorts}
    taken["full"] = sampler.full_sorts
    assert taken[path] == 6, f"the {kind} rows did not take the {path} path: {taken}"
    for row in range(6):
        ref_p, ref_idx = full_sort_nucleus(probs[row], top_p)
        assert len(ref_p) == len(fast_p[row])
        # same token set with the same probabilities (ties could order them differently)
        assert set(ref_idx.tolist()) == set(fast_idx[row].tolist())
        assert torch.equal(probs[row, fast_idx[row]], fast_p[row])
        assert torch.equal(ref_p.sort().values, fast_p[row].sort().values)


def test_draws_follow_the_full_sort_nucleus():
    """Chi-square goodness of fit of 45,000 fast draws against the full-sort nucleus probabilities,
    on a distribution whose nucleus lies beyond the top-k (the floor path): 2,000 tokens share
    ~95 % of the mass (~4.7e-4 each), 18,000 share the rest (below the 1e-4 floor)."""
    rows, steps, top_p, temperature = 300, 150, 0.9, 1.0
    g = torch.Generator().manual_seed(11)
    probs = torch.full((20_000,), 0.05 / 18_000)
    probs[:2000] = 0.95 / 2000 * (1 + 0.5 * torch.rand(2000, generator=g))
    scores = probs.log().expand(rows, -1).contiguous()
    sampler = NucleusSampler(temperature=temperature, top_p=top_p)
    generators = [torch.Generator().manual_seed(seed) for seed in range(rows)]
    counts: dict[int, int] = {}
    for _ in range(steps):
        for t in sampler.draw(scores, generators):
            counts[t] = counts.get(t, 0) + 1
    assert sampler.full_sorts == 0 and sampler.floor_sorts == rows * steps
    ref_p, ref_idx = full_sort_nucleus(torch.softmax(scores[0] / temperature, -1), top_p)
    assert 1000 < len(ref_p) < 2000, "the nucleus should be most of the 2,000 head tokens"
    assert set(counts) <= set(ref_idx.tolist()), "a token outside the full-sort nucleus was drawn"
    observed = np.array([counts.get(t, 0) for t in ref_idx.tolist()], dtype=float)
    expected = ref_p.double().numpy() / float(ref_p.double().sum()) * observed.sum()
    p_value = stats.chisquare(observed, expected).pvalue
    assert p_value > 1e-3, f"fast draws differ from the full-sort nucleus (chi-square p={p_value:.2e})"
    # and the test can tell: a distribution 20 % off on half the nucleus is rejected
    wrong = expected.copy()
    wrong[: len(wrong) // 2] *= 1.2
    wrong *= observed.sum() / wrong.sum()
    assert stats.chisquare(observed, wrong).pvalue < 1e-6


def test_a_rows_draws_depend_on_its_seed_only():
    """The same seed draws the same tokens whatever else shares the batch."""
    scores = logits("spread", 4, seed=5)
    sampler = NucleusSampler(0.8, 0.95)
    alone = [torch.Generator().manual_seed(42)]
    batch = [torch.Generator().manual_seed(s) for s in (7, 42, 9, 1)]
    for _ in range(20):
        assert sampler.draw(scores[1:2].clone(), alone)[0] == sampler.draw(scores.clone(), batch)[1]
