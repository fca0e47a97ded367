"""Text normalisation and script checks for the task's language, shared by every stage.

One :class:`TextProcessor` per task (``TextProcessor.for_task(params.task)``) is applied to gold and
synthetic text alike, so that duplicate and leakage checks compare like with like. Normalisers:

* ``hazm`` — Persian: hazm's ``Normalizer`` (Arabic → Persian letters, digits, zero-width
  non-joiner spacing);
* ``nfkc`` — any language: Unicode NFKC (compatibility forms, presentation forms);
* ``none`` — whitespace only.

Each then collapses whitespace. Nothing here tokenises or stems. The module-level functions are the
Persian default (hazm, Arabic script), kept for the NLI case study and for callers without a task.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

_WS = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_PUNCT = re.compile(r"[^\w\s\u200c]", re.UNICODE)
# Unicode blocks of each supported writing system (letters outside them count against the ratio).
SCRIPT_RANGES = {
    "arabic": r"\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF",
    "latin": r"A-Za-z\u00C0-\u024F\u1E00-\u1EFF",
    "cyrillic": r"\u0400-\u052F",
    "devanagari": r"\u0900-\u097F\uA8E0-\uA8FF",
    "bengali": r"\u0980-\u09FF",
    "ethiopic": r"\u1200-\u139F\u2D80-\u2DDF",
    "greek": r"\u0370-\u03FF\u1F00-\u1FFF",
    "hebrew": r"\u0590-\u05FF\uFB1D-\uFB4F",
}


@lru_cache(maxsize=1)
def _hazm():
    import hazm  # imported lazily: hazm pulls in nltk and takes seconds to import

    return hazm.Normalizer()


@lru_cache(maxsize=1 << 17)
def _normalized(normalizer: str, text: str) -> str:
    """Memoised per process: FarsTail repeats each premise ~3 times, and hazm takes ~0.6 ms a text
    (the generate stage normalised 14,584 texts, 6,600 of them distinct, in 8.7 s)."""
    if normalizer == "hazm":
        text = _hazm().normalize(text)
    elif normalizer == "nfkc":
        text = unicodedata.normalize("NFKC", text)
    return _WS.sub(" ", text).strip()


@dataclass(frozen=True)
class TextProcessor:
    normalizer: str = "hazm"
    script: str = "arabic"

    def __post_init__(self) -> None:
        if self.normalizer not in ("hazm", "nfkc", "none"):
            raise ValueError(f"unknown normalizer {self.normalizer!r} (hazm, nfkc or none)")
        if self.script != "any" and self.script not in SCRIPT_RANGES:
            raise ValueError(f"unknown script {self.script!r} ({sorted(SCRIPT_RANGES)} or any)")

    @classmethod
    def for_task(cls, task) -> TextProcessor:
        return cls(normalizer=task.normalizer, script=task.script)

    def normalize(self, text: str) -> str:
        """Canonical form of a sentence: the language's normaliser, single spaces, stripped."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        return _normalized(self.normalizer, text)

    def dedup_key(self, text: str) -> str:
        """Key under which two texts count as duplicates: normalised, lower-cased, punctuation-free,
        ZWNJ as space."""
        t = self.normalize(text).replace("\u200c", " ").lower()
        return _WS.sub(" ", _PUNCT.sub(" ", t)).strip()

    def script_ratio(self, text: str) -> float:
        """Share of letters in the task's writing system; 0 for no letters, 1 for script 'any'."""
        letters = _LETTER.findall(text)
        if not letters:
            return 0.0
        if self.script == "any":
            return 1.0
        block = _script_pattern(self.script)
        return sum(1 for ch in letters if block.match(ch)) / len(letters)

    def words(self, text: str) -> list[str]:
        return self.dedup_key(text).split()

    def overlap(self, hypothesis: str, premise: str) -> float:
        """Share of the hypothesis's distinct words that also occur in the premise."""
        h = set(self.words(hypothesis))
        if not h:
            return 0.0
        return len(h & set(self.words(premise))) / len(h)


@cache
def _script_pattern(script: str) -> re.Pattern:
    return re.compile(f"[{SCRIPT_RANGES[script]}]")


PERSIAN = TextProcessor()
normalize = PERSIAN.normalize
dedup_key = PERSIAN.dedup_key
script_ratio = PERSIAN.script_ratio
words = PERSIAN.words
overlap = PERSIAN.overlap


def near_duplicates(
    texts: list[str], reference: list[str], ngram: int, threshold: float, chunk: int = 4096
) -> list[bool]:
    """For each text, whether its character n-gram set (of the already-normalised text) has a
    Jaccard similarity of at least ``threshold`` with some reference text. Sets are hashed into
    2^20 buckets and intersected by one sparse product per chunk, so 100k texts against a few
    thousand references take seconds, not a quadratic Python loop (a bucket collision can only
    raise a similarity, so nothing above the threshold is missed)."""
    if not texts or not reference:
        return [False] * len(texts)
    import numpy as np
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(
        analyzer="char",
        ngram_range=(ngram, ngram),
        n_features=2**20,
        binary=True,
        norm=None,
        alternate_sign=False,
        lowercase=False,
    )
    ref = vec.transform(reference).tocsr()
    ref_sizes = ref.sum(axis=1).A1
    flags: list[bool] = []
    for start in range(0, len(texts), chunk):
        part = vec.transform(texts[start : start + chunk]).tocsr()
        sizes = part.sum(axis=1).A1
        inter = (part @ ref.T).tocoo()
        # the best Jaccard per text, vectorised: a Python loop over the product's entries (about
        # 1,400 per text against FarsTail's val/test) cost half a millisecond per generated row
        best = np.zeros(part.shape[0])
        if inter.nnz:
            union = sizes[inter.row] + ref_sizes[inter.col] - inter.data
            sim = np.divide(inter.data, union, out=np.zeros(inter.nnz), where=union > 0)
            np.maximum.at(best, inter.row, sim)
        flags += (best >= threshold).tolist()
    return flags
