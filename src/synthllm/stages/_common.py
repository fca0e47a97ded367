"""What every stage entry point shares: argument parsing, params loading, error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from synthllm.budget import subset
from synthllm.errors import SynthLLMError
from synthllm.io import read_frame
from synthllm.params import Params, load_params


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    return p


def params_of(args: argparse.Namespace) -> Params:
    return load_params(args.params)


def cache_path(params: Params) -> Path:
    """The request cache: SYNTHLLM_CACHE_DIR overrides params.cache_dir (tests, shared caches)."""
    return Path(os.environ.get("SYNTHLLM_CACHE_DIR") or params.cache_dir) / "requests.sqlite"


def annotator_backend(cfg, state_dir: Path):
    """The backend of one annotator config (a trained classifier, or an LLM backend)."""
    if cfg.kind == "classifier":
        from synthllm.backends.classifier_annotator import ClassifierBackend

        return ClassifierBackend(cfg.model_dir)
    from synthllm.backends import make_backend

    return make_backend(cfg.backend, state_dir=state_dir)


def load_gold(gold_dir: Path, split: str):
    return read_frame(gold_dir / f"{split}.jsonl", required=("id", "premise", "hypothesis", "label"))


def budget_gold(gold_dir: Path, params: Params, size: int | None = None, whole: bool = False):
    """The gold-train rows whose labels may be used: gold.budget (or ``size``) of the nested order."""
    train = load_gold(gold_dir, "train")
    return train if whole else subset(train, size if size is not None else params.gold.budget,
                                      params.gold.budget_seed)


def shot_pool(gold_dir: Path, params: Params) -> list[dict]:
    """Labelled few-shot examples: the first gold.shot_pool rows of the budget order."""
    return budget_gold(gold_dir, params, params.gold.shot_pool).to_dict("records")


def entry(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], None]:
    """Run a stage main; a SynthLLMError becomes one clear line on stderr and exit status 2."""

    def wrapped(argv: list[str] | None = None) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("synthllm").setLevel(logging.INFO)
        try:
            main(argv)
        except SynthLLMError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapped
