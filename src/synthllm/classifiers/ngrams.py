"""Text classifiers (pair or single-text) and the training regimes, as ordered training phases.

A regime is a list of phases (:mod:`synthllm.regimes`); a classifier trains through them in order,
one :meth:`fit_phase` call each, on the same weights, so warm-up (synthetic, then gold), reversed
(gold, then synthetic) and mix (shuffled union) differ only in the phase list. Two implementations
share that contract:

* :class:`HashingSGDClassifier` — the offline default: hashed word/char n-grams of the hypothesis (the
  text) and, for pair tasks, of its overlap with the premise, logistic loss, trained by ``SGDClassifier.partial_fit`` so each
  phase really continues from the last. Seconds per run on 2 CPU cores.
* :class:`HFClassifier` — any transformers checkpoint (ParsBERT, XLM-R, mDeBERTa…) through
  ``AutoModelForSequenceClassification`` and the HF ``Trainer``, one ``train()`` per phase; seeded
  before its classification head is built, placed on the accelerator when there is one, saving a
  checkpoint each epoch when given a work folder (and resuming from it), logging to DVCLive.
* :class:`synthllm.pair_attention.GemmaAttentionClassifier` (kind ``gemma_attention``) — a small
  attention or pooling head over frozen, cached token states of the generator LM (Gemma 3 270M),
  the hypothesis read after the premise; trained by AdamW per phase on the same weights. The offline
  default: no downloaded encoder, minutes (align head) or seconds (pooled head) per run on CPU.

All take the task's label set and input kind (pair or single) and save them with the model, so a
loaded classifier knows what it predicts. This module does not pick hyper-parameters or evaluate;
see :mod:`synthllm.evaluation`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthllm.params import (
    NLI_LABELS,
    ClassifierParams,
    GemmaAttentionParams,
    HFClassifierParams,
    SklearnClassifierParams,
)
from synthllm.regimes import Monitor, Trainable, run_phases


def device() -> str:
    """The accelerator every model runs on when one is there (CUDA, then Apple MPS), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"


PairClassifier = Trainable  # what every classifier implements (see synthllm.regimes)


_FEATURES: OrderedDict[tuple, object] = OrderedDict()
# what the per-process feature cache may hold: the gold splits (a few tens of MiB each) stay hashed
# across runs and seeds, while a 100k-row synthetic matrix (~0.4 GiB) is re-hashed rather than kept
FEATURE_CACHE_BYTES = 256 * 2**20


def _nbytes(matrix) -> int:
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


class HashingSGDClassifier:
    kind = "sklearn_sgd"

    def __init__(self, params: SklearnClassifierParams, labels: Sequence[str] = NLI_LABELS, pair: bool = True):
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import SGDClassifier

        self.params, self.labels, self.pair = params, tuple(labels), pair
        self._words = HashingVectorizer(
            n_features=params.n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2"
        )
        self._chars = HashingVectorizer(
            n_features=params.n_features, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False, norm="l2"
        )
        self.model = SGDClassifier(loss="log_loss", alpha=params.alpha)

    def features(self, premises: Sequence[str], hypotheses: Sequence[str]):
        """Hashed n-gram features; the same texts (gold val each epoch, gold test each run) are
        hashed once per process (an LRU keyed by their content, bounded by FEATURE_CACHE_BYTES): features depend on the texts
        and ``n_features`` only, never on the weights."""
        key = (
            self.params.n_features,
            self.pair,
            hashlib.sha1("\x1e".join(f"{p}\x1f{h}" for p, h in zip(premises, hypotheses)).encode()).hexdigest(),
        )
        if key in _FEATURES:
            _FEATURES.move_to_end(key)
            return _FEATURES[key]
        matrix = self._features(premises, hypotheses)
        size = _nbytes(matrix)
        if size <= FEATURE_CACHE_BYTES:
            while _FEATURES and sum(map(_nbytes, _FEATURES.values())) + size > FEATURE_CACHE_BYTES:
                _FEATURES.popitem(last=False)
            _FEATURES[key] = matrix
        return matrix

    def _features(self, premises: Sequence[str], hypotheses: Sequence[str]):
        from scipy.sparse import csr_matrix, hstack

        if not self.pair:
            return hstack([self._words.transform(hypotheses), self._chars.transform(hypotheses)]).tocsr()
        p_sets = [set(p.split()) for p in premises]
        h_words = [h.split() for h in hypotheses]
        novel = [" ".join(w for w in hw if w not in ps) for hw, ps in zip(h_words, p_sets)]
        shared = [" ".join(w for w in hw if w in ps) for hw, ps in zip(h_words, p_sets)]
        ratio = [[sum(w in ps for w in set(hw)) / max(1, len(set(hw)))] for hw, ps in zip(h_words, p_sets)]
        return hstack(
            [
                self._words.transform(hypotheses),
                self._chars.transform(hypotheses),
                self._words.transform(["N_" + x for x in novel]),
                self._words.transform(novel),
                self._words.transform(shared),
                csr_matrix(ratio),
            ]
        ).tocsr()

    def fit_phase(
        self,
        rows: pd.DataFrame,
        epochs: int,
        seed: int,
        phase: int,
        after_epoch: Callable[[int], None],
        work_dir: Path | None = None,
    ) -> dict:
        """``epochs`` shuffled passes of ``partial_fit`` minibatches, continuing the current weights.
        The shuffles depend on (seed, phase) only, so a run resumed at a phase boundary is the same."""
        self.model.set_params(random_state=seed)
        rng = np.random.default_rng([seed, phase])
        x = self.features(list(rows["premise"]), list(rows["hypothesis"]))
        y = np.asarray(rows["label"])
        bs = self.params.batch_size
        for epoch in range(epochs):
            order = rng.permutation(len(y))
            for b in range(0, len(order), bs):
                idx = order[b : b + bs]
                self.model.partial_fit(x[idx], y[idx], classes=np.array(self.labels))
            after_epoch(epoch)
        return {}

    def snapshot(self) -> object:
        return copy.deepcopy(self.model)

    def restore(self, snapshot: object) -> None:
        self.model = copy.deepcopy(snapshot)

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        proba = self.model.predict_proba(self.features(list(premises), list(hypotheses)))
        order = [list(self.model.classes_).index(lab) for lab in self.labels]
        return proba[:, order]

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "model.pkl").open("wb") as f:
            pickle.dump(
                {
                    "params": self.params.model_dump(),
                    "model": self.model,
                    "labels": list(self.labels),
                    "pair": self.pair,
                },
                f,
            )


def _last_complete_checkpoint(folder: Path) -> str | None:
    """The newest epoch checkpoint a killed run left whole; a half-written one (the kill landed while
    it was being saved: no trainer_state.json yet, which the Trainer writes last) is removed."""
    import shutil

    complete = []
    for ckpt in folder.glob("checkpoint-*"):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            complete.append(ckpt)
        except (OSError, ValueError):  # absent, or torn mid-write
            shutil.rmtree(ckpt, ignore_errors=True)
    return str(max(complete, key=lambda c: int(c.name.rsplit("-", 1)[-1]))) if complete else None


class HFClassifier:
    kind = "hf"

    def __init__(
        self,
        params: HFClassifierParams,
        model_dir: str | None = None,
        labels: Sequence[str] = NLI_LABELS,
        pair: bool = True,
        seed: int | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

        if seed is not None:  # before the head is built: a seed's model must not depend on what ran before
            set_seed(seed)
        source = model_dir or params.model
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={lab: i for i, lab in enumerate(self.labels)},
        )
        self.model.to(device())
        self.live = None  # a dvclive.Live the Trainer logs to (set by the train stage)

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str], **kw):
        texts = (list(premises), list(hypotheses)) if self.pair else (list(hypotheses),)
        return self.tokenizer(*texts, truncation=True, max_length=self.params.max_length, **kw)

    def _dataset(self, rows: pd.DataFrame) -> list[dict]:
        """Tokenised rows as a list of feature dicts (the Trainer's DataLoader takes any sequence;
        padding is dynamic, in the collator). One fast-tokenizer call, no datasets cache files."""
        enc = self._encode(rows["premise"], rows["hypothesis"])
        labels = [self.labels.index(lab) for lab in rows["label"]]
        return [{**{k: v[i] for k, v in enc.items()}, "label": labels[i]} for i in range(len(rows))]

    def fit_phase(
        self,
        rows: pd.DataFrame,
        epochs: int,
        seed: int,
        phase: int,
        after_epoch: Callable[[int], None],
        work_dir: Path | None = None,
    ) -> dict:
        """One ``Trainer.train()``. With ``work_dir`` it saves a checkpoint each epoch there and, if
        one is already there (a killed run), resumes from the last."""
        import tempfile

        from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
        from transformers.integrations import DVCLiveCallback

        class EpochEnd(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                after_epoch(round(state.epoch or 0) - 1)
                self_model.train()

        class PhaseLive(DVCLiveCallback):  # one Live over all phases: the stage ends it, not a phase
            def on_train_end(self, args, state, control, **kwargs):
                pass

        self_model = self.model
        with tempfile.TemporaryDirectory(prefix="synthllm-hf-") as tmp:
            out = Path(work_dir or tmp)
            args = TrainingArguments(
                output_dir=str(out),
                num_train_epochs=epochs,
                max_steps=self.params.max_steps_per_phase,
                per_device_train_batch_size=self.params.batch_size,
                learning_rate=self.params.learning_rate,
                weight_decay=self.params.weight_decay,
                warmup_steps=self.params.warmup_ratio,  # a float < 1 is a ratio
                seed=seed + phase,
                data_seed=seed + phase,
                fp16=self.params.fp16,
                bf16=self.params.bf16,
                save_strategy="epoch" if work_dir else "no",
                save_total_limit=1 if work_dir else None,
                report_to=[],
                logging_strategy="epoch",
                disable_tqdm=False,
            )
            callbacks = [EpochEnd()] + ([PhaseLive(live=self.live)] if self.live is not None else [])
            trainer = Trainer(
                model=self.model,
                args=args,
                train_dataset=self._dataset(rows),
                data_collator=DataCollatorWithPadding(self.tokenizer),
                callbacks=callbacks,
            )
            resume = _last_complete_checkpoint(out) if work_dir else None
            result = trainer.train(resume_from_checkpoint=resume)
        return {
            "train_loss": round(float(result.training_loss), 6),
            "resumed": resume is not None,
            "samples_per_second": result.metrics.get("train_samples_per_second"),
        }

    def snapshot(self) -> object:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, snapshot: object) -> None:
        self.model.load_state_dict(snapshot)

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(premises), 64):
                enc = self._encode(premises[i : i + 64], hypotheses[i : i + 64], padding=True, return_tensors="pt").to(
                    self.model.device
                )
                out.append(torch.softmax(self.model(**enc).logits.float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        (out_dir / "synthllm_classifier.json").write_text(
            json.dumps({"params": self.params.model_dump(), "labels": list(self.labels), "pair": self.pair})
        )


def build_classifier(
    params: ClassifierParams, labels: Sequence[str] = NLI_LABELS, pair: bool = True, seed: int | None = None
) -> PairClassifier:
    """A fresh classifier; ``seed`` is set before anything random is built."""
    if isinstance(params, SklearnClassifierParams):
        return HashingSGDClassifier(params, labels, pair)
    if isinstance(params, GemmaAttentionParams):
        from synthllm.pair_attention import GemmaAttentionClassifier

        return GemmaAttentionClassifier(params, labels, pair)
    return HFClassifier(params, labels=labels, pair=pair, seed=seed)


def load_classifier(model_dir: Path) -> PairClassifier:
    if (model_dir / "model.pkl").is_file():
        with (model_dir / "model.pkl").open("rb") as f:
            state = pickle.load(f)
        clf = HashingSGDClassifier(
            SklearnClassifierParams(**state["params"]), state.get("labels", NLI_LABELS), state.get("pair", True)
        )
        clf.model = state["model"]
        return clf
    if (model_dir / "pair_attention.json").is_file():
        from synthllm.pair_attention import load

        return load(model_dir)
    meta = model_dir / "synthllm_classifier.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if "params" not in info:  # written before labels were saved: an NLI model
            info = {"params": info}
        return HFClassifier(
            HFClassifierParams(**info["params"]),
            model_dir=str(model_dir),
            labels=info.get("labels", NLI_LABELS),
            pair=info.get("pair", True),
        )
    raise FileNotFoundError(
        f"{model_dir}: no trained classifier (model.pkl, pair_attention.json or "
        "synthllm_classifier.json); run the stage that trains it (dvc repro)"
    )


def train_regime(
    regime: str,
    gold: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    params: ClassifierParams,
    *,
    gold_epochs: int,
    synthetic_epochs: int,
    seed: int,
    labels: Sequence[str] = NLI_LABELS,
    pair: bool = True,
    monitor: Monitor | None = None,
    select_synthetic_epoch: bool = False,
    checkpoint_dir: Path | None = None,
    live=None,
) -> tuple[PairClassifier, list[dict]]:
    """Build a fresh classifier (seeded first) and train it through the regime's phases."""

    def build(seed: int) -> PairClassifier:
        clf = build_classifier(params, labels, pair, seed)
        clf.live = live
        return clf

    def load(folder: Path) -> PairClassifier:
        clf = load_classifier(folder)
        clf.live = live
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
