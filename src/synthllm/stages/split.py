"""Stage split: one annotator's labelled pool → synthetic train/dev with the chosen label shape."""

from __future__ import annotations

from pathlib import Path

from synthllm.io import read_frame, write_json, write_jsonl
from synthllm.splitting import split_synthetic
from synthllm.stages._common import budget_gold, entry, params_of, parser

COLUMNS = ["id", "premise_id", "premise", "hypothesis", "label", "confidence", "intended_label"]


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--annotated", type=Path, required=True, help="annotated pool (.jsonl)")
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for train.jsonl and dev.jsonl")
    p.add_argument("--stats", type=Path, required=True)
    args = p.parse_args(argv)
    all_params = params_of(args)
    annotated = read_frame(args.annotated, required=("id", "premise", "hypothesis", "label", "status"))
    gold = budget_gold(args.gold, all_params)
    gold_shares = gold["label"].value_counts(normalize=True).to_dict()
    train, dev, stats = split_synthetic(
        annotated, all_params.split, gold_shares, gold, all_params.task.labels, all_params.task.input == "pair"
    )
    cols = [c for c in COLUMNS if c in train.columns]
    write_jsonl(train[cols].to_dict("records"), args.out / "train.jsonl")
    write_jsonl(dev[cols].to_dict("records"), args.out / "dev.jsonl")
    write_json(stats, args.stats)


if __name__ == "__main__":
    main()
