"""Gold data: FarsTail (pinned URL or local mirror, sha256-verified) or a local folder for any task.

FarsTail files are fetched into a staging folder and verified before anything is parsed or written,
so a bad download never leaves partial outputs. A local gold folder (``gold.source: local``) holds
``train``, ``val`` and ``test`` as ``.jsonl``, ``.csv`` or ``.tsv`` with the task's columns; its
files' sha256 go into the gold stage's counts. Both come out in the same shape: ``id``, ``premise``
(empty for single-text tasks), ``hypothesis`` (the labelled text), ``label``, plus any hard-subset
flags. This module does not split or sample the data beyond ``max_train``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synthllm.errors import GoldDataError
from synthllm.text import PERSIAN, TextProcessor


@dataclass(frozen=True)
class GoldFile:
    split: str
    name: str
    sha256: str
    columns: tuple[str, ...]


FARSTAIL_FILES = (
    GoldFile(
        "train",
        "Train-word.csv",
        "552cfe796652dc5ea02d53cd23e8b9d1d6d243bbf05fea2d9f959e9b851fbdd3",
        ("premise", "hypothesis", "label"),
    ),
    GoldFile(
        "val",
        "Val-word.csv",
        "a1f2a8bec45a597f5971c58911fabf3d9f7574b819bf637ab94f08f7be1c963e",
        ("premise", "hypothesis", "label"),
    ),
    GoldFile(
        "test",
        "Test-word.csv",
        "d0dd25408036e5dd8587a8e0d98585b46b4a7d0057fece0992fb8d490ad44f4f",
        ("premise", "hypothesis", "label", "hard(hypothesis)", "hard(overlap)"),
    ),
)
LABEL_CODES = {"e": "entailment", "c": "contradiction", "n": "neutral"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as err:
        raise GoldDataError(
            f"could not download {url}: {err}. Without internet, point the mirror environment "
            f"variable (gold.mirror_env, default SYNTHLLM_FARSTAIL_MIRROR) at a folder holding "
            f"the FarsTail CSV files."
        ) from None


def fetch(
    staging: Path,
    *,
    base_url: str,
    mirror_dir: Path | None,
    timeout: float = 60.0,
    files: tuple[GoldFile, ...] = FARSTAIL_FILES,
) -> dict[str, Path]:
    """Copy (mirror) or download (URL) every file into ``staging`` and verify its sha256."""
    staging.mkdir(parents=True, exist_ok=True)
    paths = {}
    for gf in files:
        dest = staging / gf.name
        if mirror_dir is not None:
            src = mirror_dir / gf.name
            if not src.is_file():
                raise GoldDataError(
                    f"{src}: missing from the mirror folder {mirror_dir} (expected the FarsTail "
                    f"files {[g.name for g in files]})"
                )
            shutil.copyfile(src, dest)
            origin = str(src)
        else:
            origin = f"{base_url.rstrip('/')}/{gf.name}"
            _download(origin, dest, timeout)
        actual = sha256_of(dest)
        if actual != gf.sha256:
            raise GoldDataError(
                f"{origin}: sha256 mismatch (expected {gf.sha256}, got {actual}); the file is "
                f"corrupted or not the pinned FarsTail version"
            )
        paths[gf.split] = dest
    return paths


def parse(path: Path, gf: GoldFile, tp: TextProcessor = PERSIAN) -> pd.DataFrame:
    """Parse one verified FarsTail file into normalised rows with string labels and stable ids."""
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise GoldDataError(f"{path}: not a tab-separated UTF-8 file: {err}") from None
    missing = [c for c in gf.columns if c not in df.columns]
    if missing:
        raise GoldDataError(f"{path}: missing columns {missing} (expected {list(gf.columns)})")
    bad = sorted(set(df["label"]) - set(LABEL_CODES))
    if bad:
        raise GoldDataError(f"{path}: unknown label codes {bad} (expected {sorted(LABEL_CODES)})")
    empty = df.index[(df["premise"].str.strip() == "") | (df["hypothesis"].str.strip() == "")]
    if len(empty):
        raise GoldDataError(
            f"{path}: {len(empty)} rows with an empty premise or hypothesis (first at data row {empty[0] + 1})"
        )
    out = pd.DataFrame(
        {
            "id": [f"farstail-{gf.split}-{i:05d}" for i in range(len(df))],
            "premise": df["premise"].map(tp.normalize),
            "hypothesis": df["hypothesis"].map(tp.normalize),
            "label": df["label"].map(LABEL_CODES),
        }
    )
    for col in gf.columns[3:]:
        flag = col.replace("(", "_").replace(")", "")
        out[flag] = df[col].astype(int).astype(bool)
    return out


def _cap(frames: dict[str, pd.DataFrame], max_train: int | None, seed: int) -> dict[str, pd.DataFrame]:
    if max_train is not None and max_train < len(frames["train"]):
        frames["train"] = frames["train"].sample(n=max_train, random_state=seed).sort_index()
    return frames


def load_farstail(
    staging: Path,
    *,
    base_url: str,
    mirror_dir: Path | None,
    max_train: int | None = None,
    seed: int = 0,
    tp: TextProcessor = PERSIAN,
) -> dict[str, pd.DataFrame]:
    """Fetch, verify and parse all splits; all or nothing."""
    paths = fetch(staging, base_url=base_url, mirror_dir=mirror_dir)
    frames = {gf.split: parse(paths[gf.split], gf, tp) for gf in FARSTAIL_FILES}
    return _cap(frames, max_train, seed)


LOCAL_SPLITS = ("train", "val", "test")
HARD_FLAGS = ("hard_hypothesis", "hard_overlap")


def local_files(folder: Path) -> dict[str, Path]:
    """train/val/test files of a local gold folder (one of .jsonl, .csv, .tsv each)."""
    if not folder.is_dir():
        raise GoldDataError(
            f"gold.path {folder}: not a folder (it should hold train, val and test as .jsonl, .csv or .tsv)"
        )
    files = {}
    for split in LOCAL_SPLITS:
        found = [folder / f"{split}{ext}" for ext in (".jsonl", ".csv", ".tsv") if (folder / f"{split}{ext}").is_file()]
        if len(found) != 1:
            raise GoldDataError(
                f"gold.path {folder}: expected exactly one of {split}.jsonl, {split}.csv "
                f"or {split}.tsv, found {[f.name for f in found] or 'none'}"
            )
        files[split] = found[0]
    return files


def parse_local(path: Path, split: str, task, tp: TextProcessor) -> pd.DataFrame:
    """One local gold file → normalised rows in the pipeline's shape (see the module docstring)."""
    try:
        if path.suffix == ".jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise GoldDataError(f"{path}: cannot be parsed as {path.suffix[1:]}: {err}") from None
    text_cols = ([task.premise_column] if task.input == "pair" else []) + [task.text_column]
    missing = [c for c in text_cols + ["label"] if c not in df.columns]
    if missing:
        raise GoldDataError(
            f"{path}: missing columns {missing} (task.input {task.input!r} needs "
            f"{text_cols + ['label']}; set task.premise_column/text_column to rename)"
        )
    df = df.fillna("").astype({c: str for c in text_cols + ["label"]})
    bad = sorted(set(df["label"]) - set(task.labels))
    if bad:
        raise GoldDataError(f"{path}: labels {bad[:10]} are not in task.labels {task.labels}")
    empty = df.index[(df[text_cols].apply(lambda c: c.str.strip() == "")).any(axis=1)]
    if len(empty):
        raise GoldDataError(f"{path}: {len(empty)} rows with an empty text (first at data row {empty[0] + 1})")
    if df.empty:
        raise GoldDataError(f"{path}: no rows")
    ids = (
        df["id"].astype(str)
        if "id" in df.columns
        else pd.Series([f"{task.name}-{split}-{i:05d}" for i in range(len(df))])
    )
    out = pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "premise": df[task.premise_column].map(tp.normalize).to_numpy() if task.input == "pair" else "",
            "hypothesis": df[task.text_column].map(tp.normalize).to_numpy(),
            "label": df["label"].to_numpy(),
        }
    )
    for flag in HARD_FLAGS:
        if flag in df.columns:
            out[flag] = df[flag].astype(str).str.lower().isin(("1", "true")).to_numpy()
    return out


def load_local(
    folder: Path, task, tp: TextProcessor, max_train: int | None = None, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Parse all splits of a local gold folder; returns the frames and each file's sha256."""
    files = local_files(folder)
    frames = {split: parse_local(path, split, task, tp) for split, path in files.items()}
    return _cap(frames, max_train, seed), {split: sha256_of(path) for split, path in files.items()}


def temporary_staging() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="synthllm-gold-")
