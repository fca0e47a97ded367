"""Label rows with one annotator: the sequence the annotate and cascade stages share.

Load the annotator's prompt (none for a classifier), build one request per row of each job (a job is
rows and a prompt variant), ask them through the request cache, and read the answers, asking again
(with new per-sample seeds) for sampled answers that could not be read (``annotation.ask_until_parsed``).
The requests of all jobs go out as one run, in job order, so the request bodies, seeds and their
order are those of a single stage run. The stages decide which rows to label and write the files.
An intended annotator (:func:`label_by_construction`) sends no requests at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from synthllm import annotation
from synthllm.backends import RequestCache, RunStats, make_backend, run_requests
from synthllm.backends.base import Backend
from synthllm.classifiers.backend import ClassifierBackend
from synthllm.errors import InputDataError
from synthllm.params import AnnotatorParams, TaskParams
from synthllm.prompts import load_annotate_prompt


def make_annotator_backend(cfg: AnnotatorParams, state_dir: Path | None = None) -> Backend:
    """The backend behind one annotator config: its trained classifier, or its LLM backend."""
    # the params validator gives a classifier annotator its model_dir and an llm one its backend
    if cfg.kind == "classifier":
        assert cfg.model_dir is not None
        return ClassifierBackend(cfg.model_dir)
    assert cfg.backend is not None
    return make_backend(cfg.backend, state_dir=state_dir)


@dataclass(frozen=True)
class Labelled:
    """Per job, the annotated rows and the attempts each row took; the run statistics of all jobs."""

    rows: list[list[dict]]
    attempts: list[list[int]]
    run: RunStats


def label_rows(
    name: str,
    cfg: AnnotatorParams,
    jobs: Sequence[tuple[Sequence[dict], str]],
    task: TaskParams,
    *,
    prompts: Path,
    shots: Sequence[dict],
    seed: int,
    cache_file: Path,
    desc: str,
) -> Labelled:
    """Annotator ``name`` (config ``cfg``) labels each job's rows under the job's prompt variant.
    ``prompts`` is the prompt folder, ``shots`` the few-shot pool, ``seed`` the annotate seed,
    ``cache_file`` the request cache (its folder keeps the backend's state) and ``desc`` the run's
    name (progress, messages and the default spending ledger)."""
    if cfg.kind == "intended":
        raise ValueError(f"annotator {name!r} is of kind intended: it asks no model (label_by_construction)")
    prompt = None if cfg.kind == "classifier" else load_annotate_prompt(prompts, cfg.prompt, task)
    fmt = annotation.answer_format(cfg, prompt, task.labels, task.name)

    def build(attempt: int):
        return [
            r
            for rows, variant in jobs
            for r in annotation.build_requests(
                rows, cfg, prompt, shots, seed, variant, labels=task.labels, task=task.name, attempt=attempt
            )
        ]

    backend = make_annotator_backend(cfg, cache_file.parent)
    cache = RequestCache(cache_file)
    try:
        answers, attempts, run = annotation.ask_until_parsed(
            build,
            lambda reqs, keep: run_requests(
                backend,
                reqs,
                cache,
                desc=desc,
                keep=keep,
                max_unanswered=cfg.max_unanswered,
                unanswered_param=f"annotator_configs.{name}.max_unanswered",
                **backend.accounting(),
            ),
            fmt,
            cfg.parse_retries if cfg.temperature > 0 else 0,
        )
    finally:
        cache.close()
    rows, tries, start = [], [], 0
    for job_rows, _ in jobs:
        n = len(job_rows)
        rows.append(annotation.annotate_rows(job_rows, answers[start : start + n], name))
        tries.append(attempts[start : start + n])
        start += n
    return Labelled(rows, tries, cast(RunStats, run))  # ask_until_parsed merges run_requests' stats


def label_by_construction(pool: Sequence[dict], name: str, labels: Sequence[str]) -> Labelled:
    """Annotator ``name`` of kind intended: every pool row's label is the generator's
    ``intended_label``, confidence 1.0, with no request and no cost (the $0 control an annotator
    must beat). A row without one, or with one outside ``labels``, is an error naming its id."""
    missing = [r.get("id") for r in pool if r.get("intended_label") is None]
    off = sorted({str(r["intended_label"]) for r in pool if r.get("intended_label") not in (None, *labels)})
    if missing:
        raise InputDataError(
            f"annotator {name!r} (kind intended) needs intended_label on every pool row; rows "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all) have none: "
            "regenerate the pool (dvc repro generate) or use another annotator kind"
        )
    if off:
        raise InputDataError(f"annotator {name!r}: intended labels {off} are not in task.labels {list(labels)}")
    rows = [
        {
            **r,
            "annotator": name,
            "label": r["intended_label"],
            "confidence": 1.0,
            "confidence_source": "intended",
            "labels_seen": None,
            "status": "ok",
            "reason": None,
        }
        for r in pool
    ]
    return Labelled([rows], [[0] * len(rows)], RunStats())
