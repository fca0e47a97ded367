"""Which params keys a stage really reads, recorded from attribute access (for the dvc.yaml check).

With ``$SYNTHLLM_PARAMS_LOG`` set to a folder, a stage's validated params are recorded: every field
read (``aggregates.vote.method``), every dict entry looked up (``annotator_configs.gemma``) and every
dict iterated or measured as a whole (``aggregates``), written at exit to
``<folder>/<DVC_STAGE or module>-<pid>.json``. ``tests/integration/test_dvc_pipeline.py`` compares these reads with each
stage's ``params:`` in dvc.yaml, and every field of the configuration with what some stage read.
Reading happens through the real objects (a dict stays a dict, a section keeps its class), so the
code under test is the code that runs. Off (the default), the only cost is one check per attribute
read. This module does not validate or load params.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ENV = "SYNTHLLM_PARAMS_LOG"
sections: dict[int, str] = {}  # id of a recorded section -> its dotted path ("" for the root); empty: off
reads: set[str] = set()


def note(section: object, name: str, value: object) -> None:
    """Called for every attribute read of a params section (Strict.__getattribute__). A sub-section
    or dict records its own reads, finer than the attribute that reached it."""
    path = sections.get(id(section))
    if path is None or name not in type(section).model_fields:  # type: ignore[attr-defined]
        return
    if isinstance(value, RecordingDict) or id(value) in sections:
        return
    reads.add(f"{path}.{name}" if path else name)


def note_whole(section: object) -> None:
    """A section read as a whole (model_dump): every field below it counts as read."""
    path = sections.get(id(section))
    if path:
        reads.add(path)


class RecordingDict(dict):
    """A params dict that records which entries are looked up, and when it is read whole."""

    path: str = ""

    def _key(self, key: object) -> None:
        reads.add(f"{self.path}.{key}")

    def __getitem__(self, key: Any) -> Any:
        self._key(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._key(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._key(key)
        return super().__contains__(key)

    def _whole(self) -> None:
        reads.add(self.path)

    def __iter__(self):
        self._whole()
        return super().__iter__()

    def __len__(self) -> int:
        self._whole()
        return super().__len__()

    def keys(self):
        self._whole()
        return super().keys()

    def values(self):
        self._whole()
        return super().values()

    def items(self):
        self._whole()
        return super().items()


def _walk(section: BaseModel, path: str) -> None:
    sections[id(section)] = path
    for name in type(section).model_fields:
        value = section.__dict__[name]
        child = f"{path}.{name}" if path else name
        if isinstance(value, BaseModel):
            _walk(value, child)
        elif isinstance(value, dict):
            wrapped = RecordingDict(value)
            wrapped.path = child
            object.__setattr__(section, name, wrapped)  # the same entries; frozen models allow this way only
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    _walk(item, f"{child}.{key}")


def record(params: BaseModel) -> BaseModel:
    """A deep copy of ``params`` whose reads are recorded and written at exit (when $SYNTHLLM_PARAMS_LOG
    is set; otherwise ``params`` itself)."""
    folder = os.environ.get(ENV)
    if not folder:
        return params
    copy = params.model_copy(deep=True)  # one object per path: shared defaults would blur paths
    _walk(copy, "")
    stage = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
    target = Path(folder) / f"{stage.replace('/', '_')}-{os.getpid()}.json"

    def write() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"stage": stage, "argv": sys.argv[1:], "reads": sorted(reads)}, indent=1))

    atexit.register(write)
    return copy
