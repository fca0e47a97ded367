"""Persian text normalisation and script checks, shared by every stage.

One function, :func:`normalize`, is applied to gold and synthetic text alike, so that duplicate and
leakage checks compare like with like. It wraps hazm's ``Normalizer`` (Arabic → Persian letters,
digits, zero-width non-joiner spacing) and collapses whitespace. It does not tokenise or stem.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WS = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_ARABIC_SCRIPT = re.compile(r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")
_PUNCT = re.compile(r"[^\w\s\u200c]", re.UNICODE)


@lru_cache(maxsize=1)
def _normalizer():
    import hazm  # imported lazily: hazm pulls in nltk and takes seconds to import

    return hazm.Normalizer()


def normalize(text: str) -> str:
    """Canonical form of a Persian sentence: hazm normalisation, single spaces, stripped."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return _WS.sub(" ", _normalizer().normalize(text)).strip()


def dedup_key(text: str) -> str:
    """Key under which two texts count as duplicates: normalised, punctuation-free, ZWNJ as space."""
    t = normalize(text).replace("\u200c", " ")
    return _WS.sub(" ", _PUNCT.sub(" ", t)).strip()


def script_ratio(text: str) -> float:
    """Share of letters that are in the Arabic script block (Persian uses it); 0 for no letters."""
    letters = _LETTER.findall(text)
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _ARABIC_SCRIPT.match(ch)) / len(letters)


def words(text: str) -> list[str]:
    return dedup_key(text).split()


def overlap(hypothesis: str, premise: str) -> float:
    """Share of the hypothesis's distinct words that also occur in the premise."""
    h = set(words(hypothesis))
    if not h:
        return 0.0
    return len(h & set(words(premise))) / len(h)
