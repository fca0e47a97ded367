"""Stage train: one regime (× every seed) → classifier folders under --out/seed-<n>/.

Also serves the train_annotator stage (``--annotator-classifier``): the gold-trained classifier
annotator, built by the same code from the ``annotator_training`` params section.
"""

from __future__ import annotations

import time
from pathlib import Path

from synthllm.classifier import train_regime
from synthllm.io import read_frame, write_json
from synthllm.stages._common import entry, load_gold, params_of, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--regime", required=True,
                   choices=["gold_only", "synthetic_only", "warmup", "mix", "reversed"])
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--synthetic", type=Path, help="folder with the annotator's split train.jsonl")
    p.add_argument("--out", type=Path, required=True, help="model folder")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--annotator-classifier", action="store_true",
                   help="train the gold-trained annotator from params.annotator_training")
    args = p.parse_args(argv)
    params = params_of(args)
    if args.annotator_classifier:
        cfg = params.annotator_training
        clf_params, gold_epochs, syn_epochs, seeds = cfg.classifier, cfg.gold_epochs, 1, [cfg.seed]
    else:
        cfg = params.train
        clf_params, gold_epochs, syn_epochs, seeds = (cfg.classifier, cfg.gold_epochs,
                                                      cfg.synthetic_epochs, cfg.seeds)
    gold = load_gold(args.gold, "train")
    synthetic = read_frame(args.synthetic / "train.jsonl") if args.synthetic else None
    report = {"regime": args.regime, "classifier": clf_params.kind, "seeds": {}}
    for seed in seeds:
        started = time.perf_counter()
        clf, log = train_regime(args.regime, gold, synthetic, clf_params, gold_epochs=gold_epochs,
                                synthetic_epochs=syn_epochs, seed=seed, labels=params.task.labels,
                                pair=params.task.input == "pair")
        out = args.out if args.annotator_classifier else args.out / f"seed-{seed}"
        clf.save(out)
        report["seeds"][str(seed)] = {"phases": log, "train_s": round(time.perf_counter() - started, 2)}
    write_json(report, args.metrics)


if __name__ == "__main__":
    main()
