"""Edited copies of params.yaml for tests, and the OpenAI-protocol backend dict a test server answers.

Tests change a few keys of the real params.yaml and write the result where a stage reads it:

    params = edited_params(repo_root / "params.yaml", {"annotate.audit_size": 10}, aggregates={}, cascades={})
    write_params(tmp_path / "params.yaml", params)

`edited_params` sets each dotted path of its mapping (creating no sections: the path's parents must
exist) and replaces each keyword's top-level section whole. `rewrite_params` does the same to a
params file in place. `fake_backend` is the backend entry that points an annotator or the generator
at a served model (the fake OpenAI server, llama.cpp, transformers serve).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml


def load_params(source: Path) -> dict:
    return yaml.safe_load(Path(source).read_text())


def set_path(params: dict, dotted: str, value: object) -> None:
    """params["a"]["b"]["c"] = value for dotted "a.b.c"; every parent must already exist."""
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value


def edited_params(source: Path, paths: Mapping[str, object] | None = None, /, **sections: object) -> dict:
    """The params at source with each dotted path in paths set, then each keyword's section replaced."""
    params = load_params(source)
    for dotted, value in (paths or {}).items():
        set_path(params, dotted, value)
    params.update(sections)
    return params


def write_params(path: Path, params: dict, *, sort_keys: bool = True) -> Path:
    """yaml.safe_dump(params, allow_unicode=True) into path (keys sorted unless sort_keys=False); returns path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=sort_keys), encoding="utf-8")
    return path


def rewrite_params(
    path: Path, paths: Mapping[str, object] | None = None, /, *, sort_keys: bool = True, **sections
) -> dict:
    """Edit the params file at path in place, as edited_params does; returns the new params."""
    params = edited_params(path, paths, **sections)
    write_params(path, params, sort_keys=sort_keys)
    return params


def fake_backend(url: str, model: str, **fields: object) -> dict:
    """{"kind": "openai", "model": model, "base_urls": [url], **fields}: a backend served at url."""
    return {"kind": "openai", "model": model, "base_urls": [url], **fields}


def annotate_argv(work: Path, gold_dir: Path, repo_root: Path, tag: str, name: str = "remote") -> list[str]:
    """The annotate stage's command line for annotator ``name`` in a test work folder (outputs under ``tag``)."""
    return [
        "--params",
        str(work / "params.yaml"),
        "--name",
        name,
        "--pool",
        str(work / "generated.jsonl"),
        "--gold",
        str(gold_dir),
        "--prompts",
        str(repo_root / "prompts"),
        "--out",
        str(work / tag / "annotated.jsonl"),
        "--audit",
        str(work / tag / "audit.jsonl"),
        "--metrics",
        str(work / tag / "metrics.json"),
    ]
