"""Stage evaluate: every seed of one trained configuration on gold test and its hard subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthllm.classifiers import load_classifier
from synthllm.evaluation import confusion_rows, evaluate_predictions, subsets_of
from synthllm.io import write_json, write_jsonl
from synthllm.stages._common import entry, load_gold, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--models", type=Path, required=True, help="folder with seed-<n>/ models")
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--predictions", type=Path, required=True)
    p.add_argument("--plot", type=Path, required=True, help="confusion rows of the first seed")
    args = p.parse_args(argv)
    test = load_gold(args.gold, "test")
    seed_dirs = sorted(args.models.glob("seed-*"), key=lambda d: int(d.name.split("-")[1]))
    if not seed_dirs:
        raise FileNotFoundError(f"{args.models}: no seed-<n> model folders (run the train stage)")
    per_seed, predictions = {}, []
    for k, d in enumerate(seed_dirs):
        clf = load_classifier(d)
        proba = clf.predict_proba(list(test["premise"]), list(test["hypothesis"]))
        predicted = [clf.labels[i] for i in proba.argmax(1)]
        per_seed[d.name] = evaluate_predictions(test, predicted, clf.labels)
        predictions += [
            {"id": i, "seed": d.name, "label": g, "predicted": pr, "confidence": round(float(c), 6)}
            for i, g, pr, c in zip(test["id"], test["label"], predicted, proba.max(1))
        ]
        if k == 0:
            write_json(confusion_rows(test, predicted), args.plot)
    summary = {}
    subsets = subsets_of(test)
    for subset in subsets:
        for metric in ("accuracy", "macro_f1"):
            values = [m[subset][metric] for m in per_seed.values()]
            summary[f"{subset}_{metric}_mean"] = round(float(np.mean(values)), 6)
            summary[f"{subset}_{metric}_std"] = round(float(np.std(values)), 6)
    write_json(
        {
            "summary": summary,
            "seeds": {
                s: {sub: {k: v for k, v in m[sub].items() if k != "confusion"} for sub in subsets}
                for s, m in per_seed.items()
            },
        },
        args.metrics,
    )
    write_jsonl(predictions, args.predictions)


if __name__ == "__main__":
    main()
