"""What every classifier family shares: the training contract and the one meta file.

Every saved classifier folder holds :data:`META_FILE`, whose ``kind`` names the family (the module
of :mod:`synthllm.classifiers` that loads it), beside the labels it predicts, its input kind (pair
or single) and its parameters; the family's own files (weights, tokenizer…) lie next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthllm.regimes import Trainable

PairClassifier = Trainable  # what every classifier implements (see synthllm.regimes)

META_FILE = "classifier.json"


def write_meta(out_dir: Path, clf, **extra) -> None:
    """``out_dir``/:data:`META_FILE`: the classifier's kind, params, labels and input kind, plus
    ``extra`` (what a family checks at load)."""
    meta = {"kind": clf.kind, "params": clf.params.model_dump(), "labels": list(clf.labels), "pair": clf.pair}
    (out_dir / META_FILE).write_text(json.dumps({**meta, **extra}, ensure_ascii=False, indent=1))


def read_meta(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / META_FILE).read_text())
