"""The hashed n-gram classifier (kind ``sklearn_sgd``), the offline default of the train stage.

Hashed word/char n-grams of the hypothesis (the text) and, for pair tasks, of its overlap with the
premise, logistic loss, trained by ``SGDClassifier.partial_fit`` so each phase really continues
from the last. Seconds per run on 2 CPU cores.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthllm.classifiers.base import write_meta
from synthllm.params import SklearnClassifierParams

_FEATURES: OrderedDict[tuple, object] = OrderedDict()
# what the per-process feature cache may hold: the gold splits (a few tens of MiB each) stay hashed
# across runs and seeds, while a 100k-row synthetic matrix (~0.4 GiB) is re-hashed rather than kept
FEATURE_CACHE_BYTES = 256 * 2**20


def _nbytes(matrix) -> int:
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


class HashingSGDClassifier:
    kind = "sklearn_sgd"

    def __init__(self, params: SklearnClassifierParams, labels: Sequence[str], pair: bool = True):
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
        write_meta(out_dir, self)


def load(model_dir: Path) -> HashingSGDClassifier:
    with (model_dir / "model.pkl").open("rb") as f:
        state = pickle.load(f)
    clf = HashingSGDClassifier(SklearnClassifierParams(**state["params"]), state["labels"], state.get("pair", True))
    clf.model = state["model"]
    return clf
