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
