"""FarsTail gold data: fetch (pinned URL or local mirror), verify sha256, parse, normalise.

Files are fetched into a staging folder and verified before anything is parsed or written, so a bad
download never leaves partial outputs. This module does not split or sample the data.
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
from synthllm.text import normalize


@dataclass(frozen=True)
class GoldFile:
    split: str
    name: str
    sha256: str
    columns: tuple[str, ...]


FARSTAIL_FILES = (
    GoldFile("train", "Train-word.csv",
             "552cfe796652dc5ea02d53cd23e8b9d1d6d243bbf05fea2d9f959e9b851fbdd3",
             ("premise", "hypothesis", "label")),
    GoldFile("val", "Val-word.csv",
             "a1f2a8bec45a597f5971c58911fabf3d9f7574b819bf637ab94f08f7be1c963e",
             ("premise", "hypothesis", "label")),
    GoldFile("test", "Test-word.csv",
             "d0dd25408036e5dd8587a8e0d98585b46b4a7d0057fece0992fb8d490ad44f4f",
             ("premise", "hypothesis", "label", "hard(hypothesis)", "hard(overlap)")),
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


def fetch(staging: Path, *, base_url: str, mirror_dir: Path | None, timeout: float = 60.0,
          files: tuple[GoldFile, ...] = FARSTAIL_FILES) -> dict[str, Path]:
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


def parse(path: Path, gf: GoldFile) -> pd.DataFrame:
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
        raise GoldDataError(f"{path}: {len(empty)} rows with an empty premise or hypothesis "
                            f"(first at data row {empty[0] + 1})")
    out = pd.DataFrame({
        "id": [f"farstail-{gf.split}-{i:05d}" for i in range(len(df))],
        "premise": df["premise"].map(normalize),
        "hypothesis": df["hypothesis"].map(normalize),
        "label": df["label"].map(LABEL_CODES),
    })
    for col in gf.columns[3:]:
        flag = col.replace("(", "_").replace(")", "")
        out[flag] = df[col].astype(int).astype(bool)
    return out


def load_farstail(staging: Path, *, base_url: str, mirror_dir: Path | None,
                  max_train: int | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Fetch, verify and parse all splits; all or nothing."""
    paths = fetch(staging, base_url=base_url, mirror_dir=mirror_dir)
    frames = {gf.split: parse(paths[gf.split], gf) for gf in FARSTAIL_FILES}
    if max_train is not None and max_train < len(frames["train"]):
        frames["train"] = frames["train"].sample(n=max_train, random_state=seed).sort_index()
    return frames


def temporary_staging() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="synthllm-gold-")
