"""Text classifiers (pair or single-text) and the training regimes, as ordered training phases.

A regime is a list of phases ``(rows, epochs)``; a classifier trains through them in order, so
warm-up (synthetic, then gold), reversed (gold, then synthetic) and mix (shuffled union) differ only
in the phase list. Two implementations share that contract:

* :class:`HashingSGDClassifier` — the offline default: hashed word/char n-grams of the hypothesis (the
  text) and, for pair tasks, of its overlap with the premise, logistic loss, trained by ``SGDClassifier.partial_fit`` so each
  phase really continues from the last. Seconds per run on 2 CPU cores.
* :class:`HFClassifier` — any transformers checkpoint (ParsBERT, XLM-R, mDeBERTa…) through
  ``AutoModelForSequenceClassification`` and the HF ``Trainer``, one ``train()`` per phase.

Both take the task's label set and input kind (pair or single) and save them with the model, so a
loaded classifier knows what it predicts. This module does not pick hyper-parameters or evaluate;
see :mod:`synthllm.evaluation`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from synthllm.params import NLI_LABELS, HFClassifierParams, SklearnClassifierParams

Phase = tuple[pd.DataFrame, int]


def regime_phases(regime: str, gold: pd.DataFrame, synthetic: pd.DataFrame | None,
                  gold_epochs: int, synthetic_epochs: int, seed: int) -> list[Phase]:
    if regime == "gold_only":
        return [(gold, gold_epochs)]
    if synthetic is None or synthetic.empty:
        raise ValueError(f"regime {regime!r} needs synthetic training rows, and there are none")
    if regime == "synthetic_only":
        return [(synthetic, synthetic_epochs)]
    if regime == "warmup":
        return [(synthetic, synthetic_epochs), (gold, gold_epochs)]
    if regime == "reversed":
        return [(gold, gold_epochs), (synthetic, synthetic_epochs)]
    if regime == "mix":
        union = pd.concat([gold, synthetic], ignore_index=True).sample(frac=1.0, random_state=seed)
        return [(union, gold_epochs)]
    raise ValueError(f"unknown regime {regime!r}")


class PairClassifier(Protocol):
    labels: tuple[str, ...]
    pair: bool

    def fit_phases(self, phases: Sequence[Phase], seed: int) -> list[dict]: ...
    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray: ...
    def save(self, out_dir: Path) -> None: ...


class HashingSGDClassifier:
    kind = "sklearn_sgd"

    def __init__(self, params: SklearnClassifierParams, labels: Sequence[str] = NLI_LABELS,
                 pair: bool = True):
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import SGDClassifier

        self.params, self.labels, self.pair = params, tuple(labels), pair
        self._words = HashingVectorizer(n_features=params.n_features, ngram_range=(1, 2),
                                        alternate_sign=False, norm="l2")
        self._chars = HashingVectorizer(n_features=params.n_features, analyzer="char_wb",
                                        ngram_range=(2, 4), alternate_sign=False, norm="l2")
        self.model = SGDClassifier(loss="log_loss", alpha=params.alpha)

    def features(self, premises: Sequence[str], hypotheses: Sequence[str]):
        from scipy.sparse import csr_matrix, hstack

        if not self.pair:
            return hstack([self._words.transform(hypotheses), self._chars.transform(hypotheses)]).tocsr()
        p_sets = [set(p.split()) for p in premises]
        h_words = [h.split() for h in hypotheses]
        novel = [" ".join(w for w in hw if w not in ps) for hw, ps in zip(h_words, p_sets)]
        shared = [" ".join(w for w in hw if w in ps) for hw, ps in zip(h_words, p_sets)]
        ratio = [[sum(w in ps for w in set(hw)) / max(1, len(set(hw)))] for hw, ps in zip(h_words, p_sets)]
        return hstack([self._words.transform(hypotheses), self._chars.transform(hypotheses),
                       self._words.transform(["N_" + x for x in novel]), self._words.transform(novel),
                       self._words.transform(shared), csr_matrix(ratio)]).tocsr()

    def fit_phases(self, phases: Sequence[Phase], seed: int) -> list[dict]:
        self.model.set_params(random_state=seed)
        rng = np.random.default_rng(seed)
        log = []
        for k, (rows, epochs) in enumerate(phases):
            x = self.features(list(rows["premise"]), list(rows["hypothesis"]))
            y = np.asarray(rows["label"])
            bs = self.params.batch_size
            for _ in range(epochs):
                order = rng.permutation(len(y))
                for b in range(0, len(order), bs):
                    idx = order[b:b + bs]
                    self.model.partial_fit(x[idx], y[idx], classes=np.array(self.labels))
            log.append({"phase": k, "rows": int(len(y)), "epochs": epochs})
        return log

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        proba = self.model.predict_proba(self.features(list(premises), list(hypotheses)))
        order = [list(self.model.classes_).index(lab) for lab in self.labels]
        return proba[:, order]

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "model.pkl").open("wb") as f:
            pickle.dump({"params": self.params.model_dump(), "model": self.model,
                         "labels": list(self.labels), "pair": self.pair}, f)


class HFClassifier:
    kind = "hf"

    def __init__(self, params: HFClassifierParams, model_dir: str | None = None,
                 labels: Sequence[str] = NLI_LABELS, pair: bool = True):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = model_dir or params.model
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={lab: i for i, lab in enumerate(self.labels)})

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str], **kw):
        texts = (list(premises), list(hypotheses)) if self.pair else (list(hypotheses),)
        return self.tokenizer(*texts, truncation=True, max_length=self.params.max_length, **kw)

    def _dataset(self, rows: pd.DataFrame) -> list[dict]:
        """Tokenised rows as a list of feature dicts (the Trainer's DataLoader takes any sequence;
        padding is dynamic, in the collator). One fast-tokenizer call, no datasets cache files."""
        enc = self._encode(rows["premise"], rows["hypothesis"])
        labels = [self.labels.index(lab) for lab in rows["label"]]
        return [{**{k: v[i] for k, v in enc.items()}, "label": labels[i]} for i in range(len(rows))]

    def fit_phases(self, phases: Sequence[Phase], seed: int, work_dir: Path | None = None) -> list[dict]:
        import tempfile

        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        log = []
        with tempfile.TemporaryDirectory(prefix="synthllm-hf-") as tmp:
            for k, (rows, epochs) in enumerate(phases):
                args = TrainingArguments(
                    output_dir=str(work_dir or tmp), num_train_epochs=epochs,
                    max_steps=self.params.max_steps_per_phase,
                    per_device_train_batch_size=self.params.batch_size,
                    learning_rate=self.params.learning_rate, weight_decay=self.params.weight_decay,
                    warmup_steps=self.params.warmup_ratio,  # a float < 1 is a ratio
                     seed=seed + k, data_seed=seed + k,
                    fp16=self.params.fp16, bf16=self.params.bf16, save_strategy="no",
                    report_to=[], logging_strategy="epoch", disable_tqdm=False)
                trainer = Trainer(model=self.model, args=args, train_dataset=self._dataset(rows),
                                  data_collator=DataCollatorWithPadding(self.tokenizer))
                out = trainer.train()
                log.append({"phase": k, "rows": int(len(rows)), "epochs": epochs,
                            "train_loss": round(float(out.training_loss), 6),
                            "samples_per_second": out.metrics.get("train_samples_per_second")})
        return log

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(premises), 64):
                enc = self._encode(premises[i:i + 64], hypotheses[i:i + 64], padding=True,
                                   return_tensors="pt").to(self.model.device)
                out.append(torch.softmax(self.model(**enc).logits.float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        (out_dir / "synthllm_classifier.json").write_text(json.dumps(
            {"params": self.params.model_dump(), "labels": list(self.labels), "pair": self.pair}))


def build_classifier(params: SklearnClassifierParams | HFClassifierParams,
                     labels: Sequence[str] = NLI_LABELS, pair: bool = True) -> PairClassifier:
    if isinstance(params, SklearnClassifierParams):
        return HashingSGDClassifier(params, labels, pair)
    return HFClassifier(params, labels=labels, pair=pair)


def load_classifier(model_dir: Path) -> PairClassifier:
    if (model_dir / "model.pkl").is_file():
        with (model_dir / "model.pkl").open("rb") as f:
            state = pickle.load(f)
        clf = HashingSGDClassifier(SklearnClassifierParams(**state["params"]),
                                   state.get("labels", NLI_LABELS), state.get("pair", True))
        clf.model = state["model"]
        return clf
    meta = model_dir / "synthllm_classifier.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if "params" not in info:  # written before labels were saved: an NLI model
            info = {"params": info}
        return HFClassifier(HFClassifierParams(**info["params"]), model_dir=str(model_dir),
                            labels=info.get("labels", NLI_LABELS), pair=info.get("pair", True))
    raise FileNotFoundError(f"{model_dir}: no trained classifier (model.pkl or synthllm_classifier.json)")


def train_regime(regime: str, gold: pd.DataFrame, synthetic: pd.DataFrame | None,
                 params: SklearnClassifierParams | HFClassifierParams, *, gold_epochs: int,
                 synthetic_epochs: int, seed: int, labels: Sequence[str] = NLI_LABELS,
                 pair: bool = True) -> tuple[PairClassifier, list[dict]]:
    """Build a fresh classifier and train it through the regime's phases."""
    phases = regime_phases(regime, gold, synthetic, gold_epochs, synthetic_epochs, seed)
    clf = build_classifier(params, labels, pair)
    return clf, clf.fit_phases(phases, seed)
