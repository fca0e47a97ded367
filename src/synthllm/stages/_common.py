"""What every stage entry point shares: argument parsing, params loading, error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

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


def load_gold(gold_dir: Path, split: str):
    return read_frame(gold_dir / f"{split}.jsonl", required=("id", "premise", "hypothesis", "label"))


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
