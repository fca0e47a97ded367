"""Annotate: turn rows (premise + hypothesis, or one text) into annotator requests; parse answers.

Three ways to label, one request type: a classifier's class probabilities (``fields``), a base LM
scoring the label words as continuations (``logprob``), or a model writing its answer
(``instruct``: a completion for base models, chat + JSON schema for HTTP chat models). Every input
row comes back, with a label and confidence or with ``status="failed"`` and the reason; an answer
outside the task's label set is a failure, never a guess.
"""

from __future__ import annotations

import json
import math
import random
from typing import Sequence

from synthllm.backends.base import Request, Result
from synthllm.params import NLI_LABELS, AnnotatorParams
from synthllm.prompts import AnnotatePrompt, pick_shots


def label_schema(labels: Sequence[str], task: str = "nli") -> dict:
    """JSON schema of a structured answer: one label of the task's label set."""
    return {
        "name": f"{task}_label",
        "schema": {"type": "object", "properties": {"label": {"type": "string", "enum": list(labels)}},
                   "required": ["label"], "additionalProperties": False},
        "strict": True,
    }


LABEL_SCHEMA = label_schema(NLI_LABELS)


def build_requests(pairs: Sequence[dict], cfg: AnnotatorParams, prompt: AnnotatePrompt | None,
                   shot_pool: Sequence[dict], seed: int, variant: str = "default",
                   labels: Sequence[str] = NLI_LABELS, task: str = "nli") -> list[Request]:
    labels = tuple(labels)
    if cfg.kind == "classifier":
        return [Request(fields=(("premise", p["premise"]), ("hypothesis", p["hypothesis"])),
                        choices=labels) for p in pairs]
    schema = label_schema(labels, task)
    assert prompt is not None
    chat = cfg.backend is not None and cfg.backend.kind == "openai" and cfg.backend.endpoint == "chat"
    requests = []
    for p in pairs:
        if chat:
            requests.append(Request(messages=prompt.render_chat(p["premise"], p["hypothesis"], variant),
                                    json_schema=schema, max_new_tokens=20, temperature=0.0))
            continue
        rng = random.Random(f"{seed}-{p['id']}")
        shots = pick_shots(shot_pool, cfg.shots, rng, p["premise"])
        text = prompt.render_scoring(p["premise"], p["hypothesis"], shots, variant)
        if cfg.method == "logprob":
            requests.append(Request(prompt=text, choices=tuple(prompt.answer_word(l) for l in labels)))
        else:
            requests.append(Request(prompt=text, max_new_tokens=8, temperature=0.0, stop=("\n",)))
    return requests


def _softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def _label_from_text(text: str, prompt: AnnotatePrompt | None, labels: Sequence[str]) -> str | None:
    text = text.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("label", ""))
        except (json.JSONDecodeError, AttributeError):
            return None
    if prompt is None:
        return text if text in labels else None
    label = prompt.parse_label(text)
    if label is None and text.split():
        label = prompt.parse_label(text.split()[0])
    return label


def parse_result(result: Result, prompt: AnnotatePrompt | None,
                 labels: Sequence[str] = NLI_LABELS) -> dict:
    """label, confidence, status and reason for one annotator answer."""
    failed = {"label": None, "confidence": None, "status": "failed"}
    if not result.ok:
        return {**failed, "reason": result.error}
    if result.choice_logprobs and result.text is None:
        words = {prompt.answer_word(l): l for l in labels} if prompt else {l: l for l in labels}
        probs = _softmax({words.get(k, k): v for k, v in result.choice_logprobs.items()})
        label = max(probs, key=probs.get)
        return {"label": label, "confidence": round(probs[label], 6), "status": "ok", "reason": None}
    if result.finish_reason in ("length", "content_filter"):
        return {**failed, "reason": f"finish_reason={result.finish_reason}"}
    if not (result.text or "").strip():
        return {**failed, "reason": "empty answer"}
    label = _label_from_text(result.text, prompt, labels)
    if label is None:
        return {**failed, "reason": f"answer outside the label set: {result.text.strip()[:40]!r}"}
    confidence = None
    if result.choice_logprobs:
        # logprobs of the answer's first token alternatives, when the server returns them
        probs = {_label_from_text(k, prompt, labels): math.exp(v)
                 for k, v in result.choice_logprobs.items()}
        confidence = round(probs.get(label, 0.0), 6) or None
    return {"label": label, "confidence": confidence, "status": "ok", "reason": None}


def annotate_rows(pairs: Sequence[dict], results: Sequence[Result], prompt: AnnotatePrompt | None,
                  annotator: str, labels: Sequence[str] = NLI_LABELS) -> list[dict]:
    if len(pairs) != len(results):
        raise ValueError(f"{len(pairs)} pairs but {len(results)} results")
    return [{**p, "annotator": annotator, **parse_result(r, prompt, labels)}
            for p, r in zip(pairs, results)]
