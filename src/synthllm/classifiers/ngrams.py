"""The hashed n-gram classifier (kind ``sklearn_sgd``), the offline default of the train stage.

Hashed word/char n-grams of the hypothesis (the text) and, for pair tasks, of its overlap with the
premise, logistic loss, trained by ``SGDClassifier.partial_fit`` so each phase really continues
from the last. Seconds per run on 2 CPU cores.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthllm.classifiers.base import write_meta
from synthllm.params import SklearnClassifierParams

# what the per-process feature store may hold: the gold splits (a few tens of MiB each) stay hashed
# across runs, phases and seeds, while a 100k-row synthetic matrix (~0.4 GiB) is re-hashed rather
# than kept
FEATURE_CACHE_BYTES = 256 * 2**20


def _nbytes(matrix) -> int:
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


class _FeatureStore:
    """Hashed features of the distinct (premise, hypothesis) pairs seen in this process for one
    feature set-up (``n_features``, pair or single text), one row each, up to FEATURE_CACHE_BYTES. A row depends on its
    own texts only (hashing and the l2 norm are per row), so a matrix gathered from the store equals
    one hashed anew, bit for bit; a mix phase that repeats each gold row ``gold_epochs`` times hashes
    each once, and gold val, read every epoch, is hashed once per process. Rows that would not fit
    beside what is kept replace it; a request too large to keep at all (a 100k-row synthetic split)
    is answered and forgotten."""

    def __init__(self) -> None:
        self.rows: dict[tuple, int] = {}
        self.matrix: Any = None  # a scipy CSR matrix, one row per key in ``rows``

    def clear(self) -> None:
        self.rows, self.matrix = {}, None

    def get(self, keys: Sequence[tuple], compute: Callable[[list[int]], Any]) -> Any:
        """The features of ``keys``, in order; ``compute(positions)`` hashes the rows at those positions
        of ``keys`` that the store lacks."""
        from scipy.sparse import vstack

        rows, matrix = self.rows, self.matrix
        missing = list(dict.fromkeys(k for k in keys if k not in rows))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            new = compute([first[k] for k in missing])
            base = 0 if matrix is None else matrix.shape[0]
            rows = {**rows, **{k: base + i for i, k in enumerate(missing)}}
            matrix = new if matrix is None else vstack([matrix, new], format="csr")
            if _nbytes(matrix) <= FEATURE_CACHE_BYTES:
                self.rows, self.matrix = rows, matrix
            elif _nbytes(new) <= FEATURE_CACHE_BYTES:
                self.rows, self.matrix = {k: i for i, k in enumerate(missing)}, new
        assert matrix is not None
        return matrix[[rows[k] for k in keys]]

    def nbytes(self) -> int:
        return 0 if self.matrix is None else _nbytes(self.matrix)


_STORES: dict[tuple[int, bool, str], _FeatureStore] = {}  # per feature set-up (and disk folder)


class _DiskFeatures:
    """Hashed features kept on disk between processes, in append-only shards (``<id>.npz`` and
    ``<id>.keys.json``, the keys written last, so an interrupted write leaves no visible shard),
    keyed by a digest of each (premise, hypothesis). Every train, evaluate and curve stage reads gold
    train, val or test: hashed once for the whole pipeline instead of once per process (~2 s each).
    The folder name carries FORMAT and the feature set-up: bump FORMAT when :meth:`_features` changes."""

    FORMAT = "ngram-v1"

    def __init__(self, folder: Path):
        self.folder = folder
        self.index: dict[str, tuple[str, int]] = {}
        self.seen: set[str] = set()
        self.shards: dict[str, Any] = {}

    @staticmethod
    def digest(premise: str, hypothesis: str) -> str:
        return hashlib.sha1(f"{premise}\x1f{hypothesis}".encode()).hexdigest()

    def features(self, premises: list[str], hypotheses: list[str], compute: Callable[[list[int]], Any]) -> Any:
        """The rows of these pairs, in order: from the shards where stored, else ``compute(positions)``
        (then stored as a new shard)."""
        from scipy.sparse import load_npz, vstack

        for keys in sorted(self.folder.glob("*.keys.json")) if self.folder.is_dir() else []:
            if keys.name not in self.seen:
                shard = keys.name.removesuffix(".keys.json")
                self.index.update((d, (shard, row)) for row, d in enumerate(json.loads(keys.read_text())))
                self.seen.add(keys.name)
        digests = [self.digest(p, h) for p, h in zip(premises, hypotheses)]
        todo = [i for i, d in enumerate(digests) if d not in self.index]
        parts, order = [], np.empty(len(digests), np.int64)
        by_shard: dict[str, list[int]] = {}
        for i, d in enumerate(digests):
            if d in self.index:
                by_shard.setdefault(self.index[d][0], []).append(i)
        at = 0
        for shard, positions in by_shard.items():
            if shard not in self.shards:
                self.shards[shard] = load_npz(self.folder / f"{shard}.npz").tocsr()
            parts.append(self.shards[shard][[self.index[digests[i]][1] for i in positions]])
            order[positions] = np.arange(at, at + len(positions))
            at += len(positions)
        if todo:
            new = compute(todo)
            self._write(new, [digests[i] for i in todo])
            parts.append(new)
            order[todo] = np.arange(at, at + len(todo))
        matrix = parts[0] if len(parts) == 1 else vstack(parts, format="csr")
        return matrix if np.array_equal(order, np.arange(len(order))) else matrix[order]

    def _write(self, matrix: Any, digests: list[str]) -> None:
        from scipy.sparse import save_npz

        self.folder.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:12]
        tmp = self.folder / f".{shard}.tmp.npz"
        save_npz(tmp, matrix, compressed=False)
        os.replace(tmp, self.folder / f"{shard}.npz")
        tmp = self.folder / f".{shard}.keys.tmp"
        tmp.write_text(json.dumps(digests))
        os.replace(tmp, self.folder / f"{shard}.keys.json")
        self.seen.add(f"{shard}.keys.json")
        self.index.update((d, (shard, row)) for row, d in enumerate(digests))
        self.shards[shard] = matrix


_DISKS: dict[Path, _DiskFeatures] = {}


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
        # where hashed features are kept between processes (set by an owner with a cache folder: the
        # Gemma heads' n-gram member); None: hashed once per process
        self.feature_dir: Path | None = None

    def features(self, premises: Sequence[str], hypotheses: Sequence[str]):
        """Hashed n-gram features, one row per pair. Each distinct pair is hashed once per process
        (:class:`_FeatureStore`): features depend on the texts and ``n_features`` only, never on the
        weights, so gold val each epoch, gold train in every phase and seed, and a mix phase's
        repeated rows cost one hashing."""
        premises, hypotheses = list(premises), list(hypotheses)
        store = _STORES.setdefault((self.params.n_features, self.pair, str(self.feature_dir)), _FeatureStore())

        def compute(at: list[int]) -> Any:
            p, h = [premises[i] for i in at], [hypotheses[i] for i in at]
            if self.feature_dir is None:
                return self._features(p, h)
            folder = (
                self.feature_dir
                / f"{_DiskFeatures.FORMAT}-{self.params.n_features}-{'pair' if self.pair else 'single'}"
            )
            disk = _DISKS.setdefault(folder, _DiskFeatures(folder))
            return disk.features(p, h, lambda todo: self._features([p[i] for i in todo], [h[i] for i in todo]))

        return store.get(
            list(zip(premises, hypotheses)),
            compute,
        )

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
        """``epochs`` shuffled passes over ``rows``, continuing the current weights: SGD steps one row
        at a time through each epoch's permutation, which depends on (seed, phase) only, so a run
        resumed at a phase boundary is the same. ``partial_fit`` takes ``batch_size`` rows per call
        in that order (``shuffle`` off): the call size changes no step, only the cost, since every
        call also touches every weight once (at 256 rows a call, 93 % of a train stage's time)."""
        self.model.set_params(random_state=seed, shuffle=False)
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
        """Pickled with its weights as a sparse matrix: most hashed features never occur, and the
        zeros were ~85 % of a 31 MB file per model; :func:`load` makes them dense again, exactly."""
        out_dir.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.model)
        if hasattr(model, "coef_"):
            model.sparsify()
        with (out_dir / "model.pkl").open("wb") as f:
            pickle.dump(
                {
                    "params": self.params.model_dump(),
                    "model": model,
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
    if hasattr(clf.model, "coef_"):
        clf.model.densify()  # a no-op for dense weights (models saved before they were stored sparse)
    return clf
