"""Prompts are data: versioned YAML files under ``prompts/<language>/<task>/``.

This module loads and validates them (against the task's language, name and label set) and renders
them into plain strings or chat messages. Placeholders: ``{premise}`` (pair tasks), ``{hypothesis}``
or its alias ``{text}`` (the labelled text), ``{cue}`` (generation) and ``{answer}`` (shots). The
rendered text (never the template) is what goes into request cache keys, so editing a comment in a
prompt file does not invalidate paid-for results, while changing its wording does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from synthllm.errors import ParamsError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratePrompt(_Strict):
    version: str
    language: str
    task: str
    header: str
    label_cues: dict[str, str]
    shot: str
    query: str
    stop: list[str]

    def render(self, premise: str, label: str, shots: Sequence[dict]) -> str:
        cue = self.label_cues[label]
        body = "".join(
            self.shot.format(premise=s["premise"], hypothesis=s["hypothesis"], text=s["hypothesis"], cue=cue)
            for s in shots
        )
        return self.header + body + self.query.format(premise=premise, cue=cue)


class ScoringTemplate(_Strict):
    header: str
    shot: str
    query: str


class ChatTemplate(_Strict):
    system: str
    user: str
    # a few-shot example's answer turn: {answer} is the label's chat word (a JSON-schema request's
    # examples answer {"label": "<word>"}, the shape the schema asks for)
    assistant: str = "{answer}"


class LabelWords(_Strict):
    """The only answers an annotator may give, per way of asking. The first word of each list is
    the one the prompt uses (written after shots, scored, or offered as the JSON-schema enum); any
    further words are also accepted in a written answer. Nothing else is ever read as a label."""

    scoring: dict[str, list[str]]
    chat: dict[str, list[str]]

    @model_validator(mode="after")
    def _one_meaning_per_word(self) -> LabelWords:
        for method, words in (("scoring", self.scoring), ("chat", self.chat)):
            seen: dict[str, str] = {}
            for label, ws in words.items():
                if not ws or any(not w.strip() or w != w.strip() for w in ws):
                    raise ValueError(
                        f"label_words.{method}.{label}: give at least one word, without surrounding spaces"
                    )
                for w in ws:
                    other = seen.setdefault(w.casefold(), label)
                    if other != label:
                        raise ValueError(f"label_words.{method}: {w!r} names both {other} and {label}")
        if set(self.scoring) != set(self.chat):
            raise ValueError(f"label_words: scoring names {sorted(self.scoring)} but chat names {sorted(self.chat)}")
        return self


class AnnotatePrompt(_Strict):
    version: str
    language: str
    task: str
    label_words: LabelWords
    scoring: ScoringTemplate
    chat: ChatTemplate
    variants: dict[str, dict[str, str]] = {"default": {}}

    def _part(self, name: str, variant: str) -> str:
        if variant not in self.variants:
            raise ParamsError(f"prompt {self.version}: no variant {variant!r} (available: {sorted(self.variants)})")
        override = self.variants[variant].get(name)
        if override is not None:
            return override
        return getattr(self.scoring, name) if name in ("shot", "query") else getattr(self.chat, name)

    @property
    def labels(self) -> list[str]:
        return list(self.label_words.scoring)

    def answer_word(self, label: str) -> str:
        """The word that stands for ``label`` in scoring prompts (shots, scored choices)."""
        return self.label_words.scoring[label][0]

    def words(self, method: str) -> dict[str, tuple[str, ...]]:
        """Accepted answer words per label for ``scoring`` (base-model prompts) or ``chat``."""
        return {lab: tuple(ws) for lab, ws in getattr(self.label_words, method).items()}

    def render_scoring(self, premise: str, hypothesis: str, shots: Sequence[dict], variant: str = "default") -> str:
        return "".join(self.render_scoring_parts(premise, hypothesis, shots, variant))

    def render_scoring_parts(
        self, premise: str, hypothesis: str, shots: Sequence[dict], variant: str = "default"
    ) -> tuple[str, str]:
        """The scoring prompt as (header and shots, query): the first part is the same for every row
        that is shown the same shots."""
        shot_t, query_t = self._part("shot", variant), self._part("query", variant)
        body = "".join(
            shot_t.format(
                premise=s["premise"],
                hypothesis=s["hypothesis"],
                text=s["hypothesis"],
                answer=self.answer_word(s["label"]),
            )
            for s in shots
        )
        return self.scoring.header + body, query_t.format(premise=premise, hypothesis=hypothesis, text=hypothesis)

    def render_chat(
        self,
        premise: str,
        hypothesis: str,
        variant: str = "default",
        shots: Sequence[dict] = (),
        structured: bool = False,
    ) -> tuple[dict, ...]:
        """System turn, one user/assistant pair per shot (the shot's text in the variant's user
        template, its label's chat word as the answer), then the query's user turn."""
        user = self._part("user", variant)
        turns = [{"role": "system", "content": self.chat.system}]
        for shot in shots:
            word = self.label_words.chat[shot["label"]][0]
            answer = (
                json.dumps({"label": word}, ensure_ascii=False)
                if structured
                else self.chat.assistant.format(answer=word)
            )
            turns += [
                {
                    "role": "user",
                    "content": user.format(
                        premise=shot["premise"], hypothesis=shot["hypothesis"], text=shot["hypothesis"]
                    ),
                },
                {"role": "assistant", "content": answer},
            ]
        turns.append({"role": "user", "content": user.format(premise=premise, hypothesis=hypothesis, text=hypothesis)})
        return tuple(turns)


def _load(root: Path, name: str, model: type[_Strict]):
    path = root / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(
            f"prompt file {path} not found (params name {name!r}; prompts live in {root}/<language>/<task>/<name>.yaml)"
        )
    try:
        return model.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as err:
        raise ParamsError(f"prompt file {path} is invalid: {err}") from None


def _check_task(prompt, name: str, task) -> None:
    if task is not None and (prompt.language, prompt.task) != (task.language, task.name):
        raise ParamsError(
            f"prompt {name} is for language {prompt.language!r}, task {prompt.task!r}, "
            f"but params task is language {task.language!r}, task {task.name!r}"
        )


def load_generate_prompt(root: Path, name: str, labels: Sequence[str], task=None) -> GeneratePrompt:
    prompt = _load(root, name, GeneratePrompt)
    _check_task(prompt, name, task)
    missing = [lab for lab in labels if lab not in prompt.label_cues]
    if missing:
        raise ParamsError(f"prompt {name}: no label_cues for {missing}")
    return prompt


def load_annotate_prompt(root: Path, name: str, task=None) -> AnnotatePrompt:
    """The annotation prompt; with ``task``, its label_words must name exactly the task's labels."""
    prompt = _load(root, name, AnnotatePrompt)
    _check_task(prompt, name, task)
    if task is not None and set(prompt.labels) != set(task.labels):
        raise ParamsError(
            f"prompt {name}: label_words name {sorted(prompt.labels)}, but task.labels is {sorted(task.labels)}"
        )
    return prompt


def pick_shots(pool: Sequence[dict], k: int, rng: random.Random, exclude_premise: str = "") -> list[dict]:
    """k examples from pool whose premise differs from the query's (no answer leakage)."""
    candidates = [r for r in pool if not exclude_premise or r["premise"] != exclude_premise]
    return rng.sample(candidates, min(k, len(candidates)))
