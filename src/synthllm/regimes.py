"""Training regimes as ordered phases, and the one driver that trains a classifier through them.

A regime is a list of :class:`Phase` (rows, epochs, source). Every regime gives each *source* the same
number of passes — gold rows ``gold_epochs`` passes and synthetic rows ``synthetic_epochs`` passes —
and differs only in their order: ``warmup`` synthetic then gold, ``reversed`` gold then synthetic,
``mix`` both at once (one shuffled phase that holds each gold row ``gold_epochs`` times and each
synthetic row ``synthetic_epochs`` times), ``gold_only`` and ``synthetic_only`` one source.
:func:`passes` says this per regime, and the report prints it.

:func:`run_phases` seeds, builds the classifier, and runs the phases in order on the same weights,
with three things around them:

* **monitoring** — after every epoch, accuracy on gold val and on the synthetic dev split goes to a
  :class:`Monitor` (DVCLive in the train stage);
* **model selection on the synthetic dev split** (``select_synthetic_epoch``) — in a phase of
  synthetic rows, the weights of the epoch with the best synthetic-dev accuracy are kept;
* **checkpoints** — with ``checkpoint_dir``, the classifier is saved after each phase (and the HF
  Trainer saves each epoch); a killed run, restarted with the same directory, resumes after the last
  finished phase (HF: from the last saved epoch inside it).

Only the main process of a multi-process launch (``RANK`` 0) writes checkpoints. This module does not
read files other than its checkpoints, or evaluate on test.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

REGIMES = ("gold_only", "synthetic_only", "warmup", "mix", "reversed")


@dataclass(frozen=True)
class Phase:
    rows: pd.DataFrame
    epochs: int
    source: str  # "gold" | "synthetic" | "mix"


def passes(regime: str, gold_epochs: int, synthetic_epochs: int) -> str:
    """How the regime visits each source, e.g. 'synthetic ×3 → gold ×8'."""
    g, s = f"gold ×{gold_epochs}", f"synthetic ×{synthetic_epochs}"
    return {
        "gold_only": g,
        "synthetic_only": s,
        "warmup": f"{s} → {g}",
        "reversed": f"{g} → {s}",
        "mix": f"{s} + {g}, interleaved",
    }[regime]


def regime_phases(
    regime: str, gold: pd.DataFrame, synthetic: pd.DataFrame | None, gold_epochs: int, synthetic_epochs: int, seed: int
) -> list[Phase]:
    if regime == "gold_only":
        return [Phase(gold, gold_epochs, "gold")]
    if synthetic is None or synthetic.empty:
        raise ValueError(f"regime {regime!r} needs synthetic training rows, and there are none")
    if regime == "synthetic_only":
        return [Phase(synthetic, synthetic_epochs, "synthetic")]
    if regime == "warmup":
        return [Phase(synthetic, synthetic_epochs, "synthetic"), Phase(gold, gold_epochs, "gold")]
    if regime == "reversed":
        return [Phase(gold, gold_epochs, "gold"), Phase(synthetic, synthetic_epochs, "synthetic")]
    if regime == "mix":
        union = pd.concat([gold] * gold_epochs + [synthetic] * synthetic_epochs, ignore_index=True)
        return [Phase(union.sample(frac=1.0, random_state=seed).reset_index(drop=True), 1, "mix")]
    raise ValueError(f"unknown regime {regime!r}")


class Trainable(Protocol):
    """What every classifier implements: one ``fit_phase`` per phase on the same weights, class
    probabilities in ``labels`` order, weight snapshots (epoch selection) and saving."""

    labels: tuple[str, ...]
    pair: bool

    def fit_phase(
        self,
        rows: pd.DataFrame,
        epochs: int,
        seed: int,
        phase: int,
        after_epoch: Callable[[int], None],
        work_dir: Path | None = None,
    ) -> dict: ...
    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray: ...
    def snapshot(self) -> object: ...
    def restore(self, snapshot: object) -> None: ...
    def save(self, out_dir: Path) -> None: ...


def accuracy_on(clf: Trainable, rows: pd.DataFrame | None) -> float | None:
    if rows is None or rows.empty:
        return None
    proba = clf.predict_proba(list(rows["premise"]), list(rows["hypothesis"]))
    return float(np.mean(np.asarray(clf.labels)[proba.argmax(1)] == rows["label"].to_numpy()))


class Monitor:
    """Per-epoch accuracy on gold val and synthetic dev, handed to ``log`` (e.g. DVCLive)."""

    def __init__(
        self,
        val: pd.DataFrame | None = None,
        dev: pd.DataFrame | None = None,
        log: Callable[[dict], None] | None = None,
    ):
        self.val, self.dev, self.log, self.step = val, dev, log, 0

    def __call__(self, clf: Trainable, phase: int, source: str, epoch: int) -> dict:
        row = {
            "phase": phase,
            "source": source,
            "epoch": epoch,
            "step": self.step,
            "val_accuracy": accuracy_on(clf, self.val),
            "synthetic_dev_accuracy": accuracy_on(clf, self.dev),
        }
        self.step += 1
        if self.log is not None:
            self.log(row)
        return row


def is_main_process() -> bool:
    """False on the non-zero ranks of an ``accelerate launch`` / ``torchrun`` job."""
    return os.environ.get("RANK", "0") == "0"


def _finished_phases(checkpoint_dir: Path | None) -> int:
    done = 0
    while checkpoint_dir is not None and (checkpoint_dir / f"phase-{done}" / "done.json").is_file():
        done += 1
    return done


def run_phases(
    regime: str,
    gold: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    *,
    build: Callable[[int], Trainable],
    load: Callable[[Path], Trainable],
    gold_epochs: int,
    synthetic_epochs: int,
    seed: int,
    monitor: Monitor | None = None,
    select_synthetic_epoch: bool = False,
    checkpoint_dir: Path | None = None,
) -> tuple[Trainable, list[dict]]:
    """Train a classifier (``build(seed)``, which seeds before it builds) through the regime's
    phases; resume from ``checkpoint_dir`` where earlier phases finished."""
    phases = regime_phases(regime, gold, synthetic, gold_epochs, synthetic_epochs, seed)
    monitor = monitor or Monitor()
    start = _finished_phases(checkpoint_dir)
    if start:
        assert checkpoint_dir is not None  # phases only finish where there is a checkpoint folder
        clf = load(checkpoint_dir / f"phase-{start - 1}")
        log = [json.loads((checkpoint_dir / f"phase-{k}" / "done.json").read_text()) for k in range(start)]
        monitor.step = sum(phases[k].epochs for k in range(start))
    else:
        clf, log = build(seed), []
    for k in range(start, len(phases)):
        phase = phases[k]
        select = select_synthetic_epoch and phase.source == "synthetic" and monitor.dev is not None
        best: dict = {}

        def after_epoch(epoch: int, k: int = k, phase: Phase = phase, select: bool = select, best: dict = best) -> None:
            row = monitor(clf, k, phase.source, epoch)
            if select and row["synthetic_dev_accuracy"] > best.get("accuracy", -1.0):
                best.update(accuracy=row["synthetic_dev_accuracy"], epoch=epoch, weights=clf.snapshot())

        work = checkpoint_dir / f"phase-{k}" / "work" if checkpoint_dir is not None else None
        entry = {
            "phase": k,
            "source": phase.source,
            "rows": int(len(phase.rows)),
            "epochs": phase.epochs,
            **clf.fit_phase(phase.rows, phase.epochs, seed, k, after_epoch, work),
        }
        if select and best:
            clf.restore(best["weights"])
            entry.update(selected_epoch=best["epoch"], selected_dev_accuracy=round(best["accuracy"], 6))
        log.append(entry)
        if checkpoint_dir is not None and is_main_process():
            out = checkpoint_dir / f"phase-{k}"
            clf.save(out)
            (out / "done.json").write_text(json.dumps(entry))
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)  # the phase is done: its epoch checkpoints go
    return clf, log
