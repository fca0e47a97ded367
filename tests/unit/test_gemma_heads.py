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
