"""Stage gold: FarsTail (or a local gold folder) train/val/test → data/gold/{train,val,test}.jsonl
(normalised with the task's normaliser, verified)."""

from __future__ import annotations

import os
from pathlib import Path

from synthllm import gold
from synthllm.errors import GoldDataError
from synthllm.io import write_json, write_jsonl
from synthllm.stages._common import entry, params_of, parser
from synthllm.text import TextProcessor


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args(argv)
    all_params = params_of(args)
    params, task = all_params.gold, all_params.task
    tp = TextProcessor.for_task(task)
    counts: dict = {}
    if params.source == "local":
        assert params.path is not None  # required for source local by the params validator
        frames, counts["sha256"] = gold.load_local(Path(params.path), task, tp, params.max_train)
    else:
        mirror = os.environ.get(params.mirror_env)
        mirror_dir = Path(mirror) if mirror else None
        if mirror_dir is not None and not mirror_dir.is_dir():
            raise GoldDataError(
                f"{params.mirror_env}={mirror}: not a folder (unset it to download "
                f"from {params.url}, or point it at the FarsTail CSV files)"
            )
        with gold.temporary_staging() as staging:
            frames = gold.load_farstail(
                Path(staging), base_url=params.url, mirror_dir=mirror_dir, max_train=params.max_train, tp=tp
            )
    for split, df in frames.items():
        write_jsonl(df.to_dict("records"), args.out / f"{split}.jsonl")
        counts[split] = {"rows": len(df), **df["label"].value_counts().sort_index().to_dict()}
    write_json(counts, args.out / "counts.json")


if __name__ == "__main__":
    main()
