"""Reading and writing the pipeline's row files (JSON Lines, UTF-8, stable byte layout).

Writes go to a temporary file that is renamed into place, so a killed stage never leaves a
half-written output behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from synthllm.errors import InputDataError


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def read_jsonl(
    path: str | Path, required: Iterable[str] = (), shared: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file. With ``shared`` (a dict, possibly reused across files), equal
    keys and string values become one object: a premise repeated over its hypotheses, and over
    every annotator's pool, is held once (the parser makes a new string per line)."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: not found (run the stage that produces it: dvc repro)")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if shared is not None and isinstance(row, dict):
                row = {
                    shared.setdefault(k, k): shared.setdefault(v, v) if isinstance(v, str) else v
                    for k, v in row.items()
                }
            rows.append(row)
    required = list(required)
    for i, row in enumerate(rows, 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise InputDataError(f"{path}: row {i} lacks {missing}")
    return rows


def read_frame(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    return pd.DataFrame(read_jsonl(path, required))


def write_json(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def fingerprint(model_dir: Path) -> str:
    """Content hash of a saved model folder and everything below it (weights, config, tokenizer, a
    member model in a subfolder). The folder is rebuilt in place by DVC, so its path says nothing
    about which weights it holds; hashing 0.5 GB takes about a second, done once per process and
    folder state (relative names, sizes, mtimes). Hidden files and folders are skipped."""
    root = Path(model_dir)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return _hash_files(
        str(root), tuple((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    )


@functools.lru_cache(maxsize=8)
def _hash_files(root: str, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(name.encode())  # the relative path: a top-level file hashes as it always did
        with open(Path(root) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
