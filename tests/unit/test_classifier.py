import pandas as pd
import pytest

from synthllm.params import NLI_LABELS
from synthllm.regimes import passes, regime_phases

GOLD = pd.DataFrame({"premise": ["a"] * 4, "hypothesis": list("wxyz"), "label": list(NLI_LABELS) + ["neutral"]})
SYN = pd.DataFrame({"premise": ["b"] * 2, "hypothesis": ["u", "v"], "label": ["neutral", "entailment"]})


@pytest.mark.parametrize(
    "regime, expected",
    [
        ("gold_only", [(4, 8)]),
        ("synthetic_only", [(2, 3)]),
        ("warmup", [(2, 3), (4, 8)]),
        ("reversed", [(4, 8), (2, 3)]),
        ("mix", [(4 * 8 + 2 * 3, 1)]),
    ],
)
def test_regimes_are_ordered_phases(regime, expected):
    phases = regime_phases(regime, GOLD, SYN, gold_epochs=8, synthetic_epochs=3, seed=0)
    assert [(len(p.rows), p.epochs) for p in phases] == expected
    if regime == "warmup":
        assert phases[0].rows is SYN and phases[1].rows is GOLD


@pytest.mark.parametrize("regime", ["synthetic_only", "warmup", "reversed", "mix", "gold_only"])
def test_every_regime_gives_each_source_the_same_passes(regime):
    """Passes per source are fixed across regimes: gold rows 8 times, synthetic rows 3 times."""
    phases = regime_phases(regime, GOLD, SYN, gold_epochs=8, synthetic_epochs=3, seed=0)
    seen = pd.concat([p.rows for p in phases for _ in range(p.epochs)])
    counts = seen.groupby("hypothesis").size()
    assert set(counts[list("wxyz")]) == {8} if regime != "synthetic_only" else True
    assert set(counts[["u", "v"]]) == {3} if regime != "gold_only" else True
    assert "×8" in passes(regime, 8, 3) or regime == "synthetic_only"


def test_synthetic_regime_without_synthetic_rows_is_an_error():
    with pytest.raises(ValueError, match="needs synthetic"):
        regime_phases("warmup", GOLD, SYN.iloc[:0], 1, 1, 0)
