"""Session fixtures for tests/unit and tests/integration, and the fixture modules they share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixture modules beside this file (tests/ is on sys.path: pytest inserts a rootdir conftest's folder).
pytest_plugins = ["fake_openai"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def farstail_mirror() -> Path:
    path = Path(os.environ.get("SYNTHLLM_FARSTAIL_MIRROR") or REPO.parent / "shared" / "data" / "farstail").resolve()
    if not (path / "Train-word.csv").is_file():
        pytest.fail(f"FarsTail mirror not found at {path}: set SYNTHLLM_FARSTAIL_MIRROR")
    return path


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, farstail_mirror) -> Path:
    from tiny_models import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), farstail_mirror)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, farstail_mirror) -> Path:
    from tiny_models import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), farstail_mirror)


@pytest.fixture(scope="session")
def gold_dir(tmp_path_factory, farstail_mirror) -> Path:
    """The real gold stage output (all of FarsTail), built once per session."""
    from synthllm.stages import gold

    out = tmp_path_factory.mktemp("gold")
    os.environ.setdefault("SYNTHLLM_FARSTAIL_MIRROR", str(farstail_mirror))
    gold.main(["--params", str(REPO / "params.yaml"), "--out", str(out)])
    return out
