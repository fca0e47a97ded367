"""Reading the report stage's inputs: exactly the configured runs, each checked to exist and to hold
the configured seeds — never whatever files a folder happens to hold from earlier configurations."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from synthllm.errors import InputDataError
from synthllm.io import read_frame


def curve_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputDataError(
            f"{path}: a learning-curve point configured in params.yaml (curves) has no result; run `dvc repro`"
        )
    return read_frame(path)


def load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputDataError(
            f"{path}: the {what} is configured in params.yaml but has no result; "
            f"run `dvc repro` (or remove it from params.yaml)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def runs(
    eval_dir: Path, predictions_dir: Path, names: Sequence[str], seeds: Iterable[int]
) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Each run's metrics (checked to hold exactly ``seeds``) and per-item predictions."""
    metrics = {run: load_json(eval_dir / f"{run}.json", f"run {run}") for run in names}
    seeds = sorted(seeds)
    expected_seeds = {f"seed-{s}" for s in seeds}
    for run, m in metrics.items():
        if set(m["seeds"]) != expected_seeds:
            raise InputDataError(
                f"{eval_dir / run}.json holds seeds {sorted(m['seeds'])}, but train.seeds is {seeds}: run `dvc repro`"
            )
    return metrics, {run: read_frame(predictions_dir / f"{run}.jsonl") for run in names}


def curve_points(
    curves_dir: Path,
    budgets: Iterable[int],
    main_budget: int,
    predictions: dict[str, pd.DataFrame],
    pool_budget: int | None,
    gold_rows: int,
) -> tuple[dict[int, pd.DataFrame], pd.DataFrame | None, int | None]:
    """Each learning-curve point's predictions (the main budget is the main runs), and the pool-fraction
    predictions with their gold budget (None, None when curves.pool_budget is unset)."""
    points = {b: curve_frame(curves_dir / f"budget-{b}.jsonl") for b in budgets if b < main_budget}
    points[main_budget] = pd.concat([df.assign(run=run) for run, df in predictions.items()], ignore_index=True)
    if pool_budget is None:
        return points, None, None
    return points, curve_frame(curves_dir / "pool.jsonl"), min(pool_budget, gold_rows)
