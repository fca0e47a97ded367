"""Stage train: one regime (× every seed) → classifier folders under --out/seed-<n>/, per-epoch
curves (DVCLive) under --curves/seed-<n>/.

Also serves the train_annotator stage (``--annotator-classifier``): the gold-trained classifier
annotator, built by the same code from the ``annotator_training`` params section. Each phase is
checkpointed beside the request cache (outside DVC outputs, which DVC deletes before a re-run) under
a key of everything that shapes the model, so a killed run resumes; the checkpoints go once the
stage has written its outputs. Under a multi-process launcher only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from synthllm.classifiers import train_regime
from synthllm.gold import sha256_of
from synthllm.io import read_frame, write_json
from synthllm.regimes import REGIMES, Monitor, is_main_process, passes
from synthllm.stages._common import budget_gold, cache_path, entry, load_gold, params_of, parser

log = logging.getLogger("synthllm.stages.train")  # __name__ is "__main__" under python -m


def _checkpoint_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _live(folder: Path | None, hf: bool):
    """A DVCLive logger for one seed's curves (rank 0 only), and the function the monitor calls."""
    if folder is None or not is_main_process():
        return None, None
    from dvclive import Live

    live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=False)

    def log_epoch(row: dict) -> None:
        live.log_metric("phase", row["phase"])
        for name in ("val_accuracy", "synthetic_dev_accuracy"):
            if row[name] is not None:
                live.log_metric(name.replace("_accuracy", "/accuracy"), round(row[name], 6))
        if not hf:  # on the HF path the Trainer's DVCLive callback logs the loss and steps
            live.next_step()

    return live, log_epoch


def _arguments(argv: list[str] | None):
    p = parser(__doc__)
    p.add_argument("--regime", required=True, choices=REGIMES)
    p.add_argument("--gold", type=Path, required=True)
    p.add_argument("--synthetic", type=Path, help="folder with the annotator's split train.jsonl/dev.jsonl")
    p.add_argument("--out", type=Path, required=True, help="model folder")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--curves", type=Path, help="folder for per-epoch DVCLive curves")
    p.add_argument(
        "--annotator-classifier",
        action="store_true",
        help="train the gold-trained annotator from params.annotator_training",
    )
    return p.parse_args(argv)


def _settings(params, annotator_classifier: bool) -> tuple:
    """(classifier params, gold epochs, synthetic epochs, seeds, select the synthetic epoch)."""
    if annotator_classifier:
        at = params.annotator_training
        return at.classifier, at.gold_epochs, 1, [at.seed], False
    cfg = params.train
    return cfg.classifier, cfg.gold_epochs, cfg.synthetic_epochs, cfg.seeds, cfg.select_synthetic_epoch


@entry
def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    params = params_of(args)
    clf_params, gold_epochs, syn_epochs, seeds, select = _settings(params, args.annotator_classifier)
    gold, val = budget_gold(args.gold, params), load_gold(args.gold, "val")
    synthetic = dev = None
    inputs = [sha256_of(args.gold / "train.jsonl"), params.gold.budget, params.gold.budget_seed]
    if args.synthetic:
        synthetic, dev = read_frame(args.synthetic / "train.jsonl"), read_frame(args.synthetic / "dev.jsonl")
        inputs.append(sha256_of(args.synthetic / "train.jsonl"))
    report = {
        "regime": args.regime,
        "classifier": clf_params.kind,
        "seeds": {},
        "gold_rows": int(len(gold)),
        "gold_ids_sha256": hashlib.sha256("\n".join(sorted(gold["id"])).encode()).hexdigest(),
        "passes": passes(args.regime, gold_epochs, syn_epochs),
    }
    checkpoints = []
    for seed in seeds:
        started = time.perf_counter()
        key = _checkpoint_key(
            args.regime, clf_params.model_dump(), gold_epochs, syn_epochs, seed, select, inputs, params.task.labels
        )
        checkpoints.append(cache_path(params).parent / "checkpoints" / key)
        live, log_epoch = _live(args.curves / f"seed-{seed}" if args.curves else None, clf_params.kind == "hf")
        clf, phases = train_regime(
            args.regime,
            gold,
            synthetic,
            clf_params,
            gold_epochs=gold_epochs,
            synthetic_epochs=syn_epochs,
            seed=seed,
            labels=params.task.labels,
            pair=params.task.input == "pair",
            # per-epoch accuracies only where something reads them: the curves, or the epoch selection
            # (the annotator's head had gold val scored after each of its 8 epochs for nothing: 29 s)
            monitor=Monitor(val if live is not None else None, dev if live is not None or select else None, log_epoch),
            select_synthetic_epoch=select,
            checkpoint_dir=checkpoints[-1],
            live=live,
        )
        if live is not None:
            live.end()
        if is_main_process():
            out = args.out if args.annotator_classifier else args.out / f"seed-{seed}"
            clf.save(out)
            log.info("saved %s", out)
        report["seeds"][str(seed)] = {"phases": phases, "train_s": round(time.perf_counter() - started, 2)}
    _finish(report, args.metrics, checkpoints)


def _finish(report: dict, metrics: Path, checkpoints: list[Path]) -> None:
    if is_main_process():
        write_json(report, metrics)
        log.info("saved %s", metrics)
        for folder in checkpoints:  # the outputs are written: nothing left to resume
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
