"""Text classifiers (pair or single-text), one module per family, and the dispatch between them.

A regime is a list of phases (:mod:`synthllm.regimes`); a classifier trains through them in order,
one :meth:`fit_phase` call each, on the same weights, so warm-up (synthetic, then gold), reversed
(gold, then synthetic) and mix (shuffled union) differ only in the phase list. The families, each
named by one ``kind`` (``params.*.classifier.kind``, and the ``kind`` of the saved folder's
:data:`~synthllm.classifiers.base.META_FILE`):

* ``sklearn_sgd`` — :mod:`~synthllm.classifiers.ngrams` (:class:`HashingSGDClassifier`): hashed
  word/char n-grams, logistic loss, ``partial_fit``; seconds per run on 2 CPU cores.
* ``hf`` — :mod:`~synthllm.classifiers.hf` (:class:`HFClassifier`): any transformers checkpoint
  through ``AutoModelForSequenceClassification`` and the HF ``Trainer``.
* ``gemma_head`` — :mod:`~synthllm.classifiers.gemma_heads` (:class:`GemmaHeadClassifier`): an
  attention (``head: align``) or pooling (``head: pooled``) head over frozen, cached token states
  of the generator LM (:mod:`~synthllm.classifiers.gemma_states`); trained by AdamW per phase on
  the same weights. The offline default: no downloaded encoder, minutes (align head) or seconds
  (pooled head) per run on CPU.

All take the task's label set and input kind (pair or single) and save them with the model, so a
loaded classifier knows what it predicts. This package does not pick hyper-parameters or evaluate;
see :mod:`synthllm.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd

from synthllm.classifiers import hf, ngrams
from synthllm.classifiers.base import META_FILE, PairClassifier, read_meta
from synthllm.params import ClassifierParams, GemmaHeadParams, SklearnClassifierParams
from synthllm.regimes import Monitor, run_phases

__all__ = ["META_FILE", "PairClassifier", "build_classifier", "load_classifier", "train_regime"]


def build_classifier(
    params: ClassifierParams, labels: Sequence[str], pair: bool = True, seed: int | None = None
) -> PairClassifier:
    """A fresh classifier; ``seed`` is set before anything random is built."""
    if isinstance(params, SklearnClassifierParams):
        return ngrams.HashingSGDClassifier(params, labels, pair)
    if isinstance(params, GemmaHeadParams):
        from synthllm.classifiers.gemma_heads import GemmaHeadClassifier

        return GemmaHeadClassifier(params, labels, pair)
    return hf.HFClassifier(params, labels=labels, pair=pair, seed=seed)


def load_classifier(model_dir: Path) -> PairClassifier:
    """The classifier saved in ``model_dir``: its meta file's ``kind`` picks the family that loads it."""
    model_dir = Path(model_dir)
    if not (model_dir / META_FILE).is_file():
        raise FileNotFoundError(
            f"{model_dir}: no trained classifier ({META_FILE}); run the stage that trains it (dvc repro)"
        )
    kind = read_meta(model_dir)["kind"]
    if kind == "sklearn_sgd":
        return ngrams.load(model_dir)
    if kind == "hf":
        return hf.load(model_dir)
    if kind == "gemma_head":
        from synthllm.classifiers import gemma_heads

        return gemma_heads.load(model_dir)
    raise ValueError(f"{model_dir}/{META_FILE}: unknown classifier kind {kind!r}")


def train_regime(
    regime: str,
    gold: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    params: ClassifierParams,
    *,
    gold_epochs: int,
    synthetic_epochs: int,
    seed: int,
    labels: Sequence[str],
    pair: bool = True,
    monitor: Monitor | None = None,
    select_synthetic_epoch: bool = False,
    checkpoint_dir: Path | None = None,
    live=None,
) -> tuple[PairClassifier, list[dict]]:
    """Build a fresh classifier (seeded first) and train it through the regime's phases."""

    def build(seed: int) -> PairClassifier:
        clf = build_classifier(params, labels, pair, seed)
        cast(Any, clf).live = live  # a family attribute, not part of Trainable
        return clf

    def load(folder: Path) -> PairClassifier:
        clf = load_classifier(folder)
        cast(Any, clf).live = live  # a family attribute, not part of Trainable
        return clf

    return run_phases(
        regime,
        gold,
        synthetic,
        build=build,
        load=load,
        gold_epochs=gold_epochs,
        synthetic_epochs=synthetic_epochs,
        seed=seed,
        monitor=monitor,
        select_synthetic_epoch=select_synthetic_epoch,
        checkpoint_dir=checkpoint_dir,
    )
