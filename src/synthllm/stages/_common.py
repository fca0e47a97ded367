"""What every stage entry point shares: argument parsing, params loading, error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from synthllm import params_reads
from synthllm.budget import subset
from synthllm.errors import SynthLLMError
from synthllm.io import read_frame
from synthllm.params import Params, load_params


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    return p


def params_of(args: argparse.Namespace) -> Params:
    """The validated params (their reads recorded when $SYNTHLLM_PARAMS_LOG is set: tests)."""
    return params_reads.record(load_params(args.params))  # type: ignore[return-value]


def cache_path(params: Params) -> Path:
    """The request cache: SYNTHLLM_CACHE_DIR overrides params.cache_dir (tests, shared caches)."""
    return Path(os.environ.get("SYNTHLLM_CACHE_DIR") or params.cache_dir) / "requests.sqlite"


def load_gold(gold_dir: Path, split: str):
    return read_frame(gold_dir / f"{split}.jsonl", required=("id", "premise", "hypothesis", "label"))


def budget_gold(gold_dir: Path, params: Params, size: int | None = None, whole: bool = False):
    """The gold-train rows whose labels may be used: gold.budget (or ``size``) of the nested order."""
    train = load_gold(gold_dir, "train")
    return train if whole else subset(train, size if size is not None else params.gold.budget, params.gold.budget_seed)


def shot_pool(gold_dir: Path, params: Params) -> list[dict]:
    """Labelled few-shot examples: the first gold.shot_pool rows of the budget order."""
    return budget_gold(gold_dir, params, params.gold.shot_pool).to_dict("records")


def _record_resources(stage: str, argv: list[str] | None, started: float) -> None:
    """With SYNTHLLM_STAGE_STATS set, append this stage's wall time and peak RSS to that JSONL file
    (benchmarks read it; nothing else does)."""
    path = os.environ.get("SYNTHLLM_STAGE_STATS")
    if not path:
        return
    import json
    import resource
    import time

    usage = resource.getrusage(resource.RUSAGE_SELF)
    row = {
        "stage": stage,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "wall_s": round(time.perf_counter() - started, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }  # Linux reports KiB
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def entry(main: Callable[..., None]) -> Callable[..., None]:
    """Run a stage main; a SynthLLMError becomes one clear line on stderr and exit status 2."""

    def wrapped(argv: list[str] | None = None) -> None:
        import time

        started = time.perf_counter()
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("synthllm").setLevel(logging.INFO)
        try:
            main(argv)
        except SynthLLMError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        spec = getattr(sys.modules.get(main.__module__), "__spec__", None)  # "__main__" under python -m
        _record_resources(spec.name if spec else main.__module__, argv, started)

    return wrapped
