"""Stage curve: one point of a learning curve — the experiment at gold budget --budget (classifier
annotator, votes, splits, every regime × seed), or the pool-fraction curve (--pool) at
curves.pool_budget — with per-seed test predictions for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthllm import curves
from synthllm.io import read_jsonl, write_json, write_jsonl
from synthllm.stages._common import budget_gold, entry, load_gold, params_of, parser


@entry
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--budget", type=int, help="gold train pairs (the first of the nested order)")
    mode.add_argument("--pool", action="store_true", help="pool fractions at curves.pool_budget")
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--annotated", type=Path, required=True, help="folder of <annotator>.jsonl pools")
    p.add_argument("--audit", type=Path, required=True, help="folder of <annotator>.jsonl audit files")
    p.add_argument("--predictions", type=Path, required=True, help="per-seed test predictions (.jsonl)")
    p.add_argument("--metrics", type=Path, required=True)
    args = p.parse_args(argv)
    params = params_of(args)
    budget = params.curves.pool_budget if args.pool else args.budget
    gold, test = budget_gold(args.gold, params, budget), load_gold(args.gold, "test")
    shared: dict[str, str] = {}  # one object per repeated string (premises) across every pool
    pools = {n: read_jsonl(args.annotated / f"{n}.jsonl", shared=shared) for n in params.annotators}
    audits = {n: read_jsonl(args.audit / f"{n}.jsonl", shared=shared) for n in params.annotators}
    del shared
    labelled, quality, skipped = curves.relabel(gold, pools, audits, params)
    del pools, audits  # relabel's branches hold what is still needed
    report: dict[str, Any] = {
        "budget": int(len(gold)),
        "annotator_audit_accuracy": {b: q["accuracy"] for b, q in quality.items()},
        "skipped_branches": skipped,
        "points": {},
    }
    whole = curves.split_branches(labelled, gold, params)  # the split does not depend on the fraction
    del labelled
    frames = []
    for fraction in params.curves.pool_fractions if args.pool else [1.0]:
        synthetic, sizes = curves.fraction_of(whole, fraction, params)
        preds = curves.evaluate_runs(gold, synthetic, test, params, params.regimes).assign(fraction=fraction)
        del synthetic
        frames.append(preds)
        accuracy = (preds["label"] == preds["predicted"]).groupby([preds["run"], preds["seed"]]).mean()
        report["points"][str(fraction)] = {
            "synthetic_train_rows": sizes,
            "accuracy": {
                run: {seed: round(float(v), 6) for seed, v in accuracy[run].items()}
                for run in accuracy.index.get_level_values(0).unique()
            },
        }
    write_jsonl((row for f in frames for row in f.to_dict("records")), args.predictions)
    write_json(report, args.metrics)


if __name__ == "__main__":
    main()
