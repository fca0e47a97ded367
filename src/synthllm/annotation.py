"""Annotate: turn rows (premise + hypothesis, or one text) into annotator requests, and read each
answer strictly into a label and a confidence with a stated definition.

Three ways to label: a classifier's class probabilities (``classify``), a language model scoring the
prompt's label words as continuations (``score``, method ``logprob``), or a model writing its answer
(``write``, method ``instruct``: a completion for base models, chat + JSON schema for chat models).

**Strict answers.** The words an answer may use are the prompt file's ``label_words`` for that way
of asking (``scoring`` words for base-model prompts, ``chat`` words for chat), nothing else. A
written answer is the whole answer: surrounding whitespace and letter case aside, it must equal one
accepted word. When a JSON schema constrained the request, the answer must be a JSON object with
exactly the key ``label`` and one of the schema's enum values. Anything else — "maybe", prose, a bare
label to a JSON request, ``label=entailment; actually neutral``, an extra key — fails with its
reason; no label is ever guessed.

**Confidence** is always P(chosen label) renormalised over the task's label set; ``confidence_source``
says how P was obtained, and a row without logprobs has ``confidence: null`` and source ``null``:

* ``classifier`` — the classifier's predicted class probability.
* ``label_word_scores`` — a local model's log-probability of each label word's tokens after the
  prompt (summed over the word's tokens), soft-maxed over the labels.
* ``first_token_logprobs`` — an HTTP completions endpoint, one generated token with its
  ``top_logprobs``: each label's mass is the summed probability of the listed tokens that, leading
  whitespace removed, spell the start of that label's word and of no other (or the whole word and a
  non-letter), regardless of case; mass(chosen) / sum of masses.
* ``answer_token_logprobs`` — a written answer with token logprobs (chat with or without a JSON
  schema, or completions): P(label) **along the answer's path**, from the answer word's first token
  to its deciding token (the first after which only the chosen label's word is still possible). At
  each of those positions, every alternative (the chosen token included) that continues what was
  written so far into one label's word only adds the probability of the path up to there times its
  own to that label: a label that branches off at a shared first token (``ne``+``gative`` beside
  ``ne``+``utral``) gets the mass of its branch, and one that differs from the start gets its first
  token's. Alternatives that keep several labels possible or fit none are left out (case counts inside a
  JSON string, whose enum is exact; not in a plain answer). Under a JSON-schema
  grammar the server reports the *unconstrained* distribution, so leaving out what fits no label is
  exactly the grammar's renormalisation at that position.

A server lists only its top alternatives (at most 20 at OpenAI). A label none of whose tokens is
listed gets the probability of the least likely listed alternative (times the path's probability up
to that position, the largest such product along the path) — an upper bound on its own —
so a short list never inflates the confidence; ``labels_seen`` counts the labels that were listed.
A position with no listed alternatives gives no confidence. This module does not send requests or
read files; the stage does.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from synthllm.calls import Request, Result, TokenStep, stable_seed
from synthllm.params import AnnotatorParams, OpenAIBackendParams
from synthllm.prompts import AnnotatePrompt, pick_shots

SOURCES = ("classifier", "label_word_scores", "first_token_logprobs", "answer_token_logprobs")
_JSON_LABEL = re.compile(rb'"label"\s*:\s*"')


def label_schema(words: Sequence[str], task: str) -> dict:
    """JSON schema of a structured answer: exactly one key, ``label``, one of ``words``."""
    return {
        "name": f"{task}_label",
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": list(words)}},
            "required": ["label"],
            "additionalProperties": False,
        },
        "strict": True,
    }


@dataclass(frozen=True)
class AnswerFormat:
    """How one annotator is asked, and which answers it may give."""

    mode: str  # "classify" | "score" | "write"
    words: dict[str, tuple[str, ...]]  # label -> accepted words (the first is the one asked for)
    schema: dict | None = None  # the JSON schema requested (chat with structured output)
    chat: bool = False

    @property
    def labels(self) -> list[str]:
        return list(self.words)


def answer_format(
    cfg: AnnotatorParams, prompt: AnnotatePrompt | None, labels: Sequence[str], task: str
) -> AnswerFormat:
    labels = list(labels)
    if cfg.kind == "classifier" or prompt is None:
        return AnswerFormat("classify", {lab: (lab,) for lab in labels})
    chat = isinstance(cfg.backend, OpenAIBackendParams) and cfg.backend.endpoint == "chat"
    words = prompt.words("chat" if chat else "scoring")
    words = {lab: words[lab] for lab in labels}
    if cfg.method == "logprob":
        return AnswerFormat("score", words)
    schema = label_schema([ws[0] for ws in words.values()], task) if chat else None
    return AnswerFormat("write", words, schema, chat)


def _row_shots(row: dict, shared: list[dict] | None, pool: Sequence[dict], k: int, seed: int) -> list[dict]:
    """The shared shots, or the row's own draw (per-row selection, or a row whose premise is one of
    the shared shots': no answer leakage)."""
    if shared is not None and all(s["premise"] != row["premise"] for s in shared):
        return shared
    return pick_shots(pool, k, random.Random(f"{seed}-{row['id']}"), row["premise"])


def build_requests(
    pairs: Sequence[dict],
    cfg: AnnotatorParams,
    prompt: AnnotatePrompt | None,
    shot_pool: Sequence[dict],
    seed: int,
    variant: str = "default",
    *,
    labels: Sequence[str],
    task: str,
    attempt: int = 0,
) -> list[Request]:
    """One request per row. ``attempt`` > 0 re-asks a sampled answer with a new per-sample seed."""
    fmt = answer_format(cfg, prompt, labels, task)
    if fmt.mode == "classify":
        return [
            Request(fields=(("premise", p["premise"]), ("hypothesis", p["hypothesis"])), choices=tuple(fmt.labels))
            for p in pairs
        ]
    assert prompt is not None
    requests = []
    shared = (
        pick_shots(shot_pool, cfg.shots, random.Random(f"{seed}-shared")) if cfg.shot_selection == "shared" else None
    )
    for p in pairs:
        # greedy answers need no seed (and keep one cache entry); sampled ones get one per row/attempt
        sample_seed = stable_seed(seed, p["id"], variant, attempt) if cfg.temperature > 0 else 0
        shots = _row_shots(p, shared, shot_pool, cfg.shots, seed)
        if fmt.chat:  # the shots as user/assistant turns, answering in the form the request asks for
            json_answers = fmt.schema is not None and getattr(cfg.backend, "structured_output", False)
            messages = prompt.render_chat(p["premise"], p["hypothesis"], variant, shots, structured=json_answers)
            requests.append(
                Request(
                    messages=messages,
                    json_schema=fmt.schema,
                    max_new_tokens=cfg.max_answer_tokens,
                    temperature=cfg.temperature,
                    seed=sample_seed,
                )
            )
            continue
        head, query = prompt.render_scoring_parts(p["premise"], p["hypothesis"], shots, variant)
        text, prefix = head + query, len(head) if shots is shared else 0
        if fmt.mode == "score":
            requests.append(
                Request(prompt=text, choices=tuple(ws[0] for ws in fmt.words.values()), shared_prefix=prefix)
            )
        else:
            requests.append(
                Request(
                    prompt=text,
                    shared_prefix=prefix,
                    max_new_tokens=cfg.max_answer_tokens,
                    temperature=cfg.temperature,
                    stop=("\n",),
                    seed=sample_seed,
                )
            )
    return requests


# ---- reading answers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    label: str | None
    confidence: float | None = None
    source: str | None = None
    reason: str | None = None
    labels_seen: int | None = None
    answered: bool = True  # the model answered (an unusable answer may be re-asked when sampled)

    def row(self) -> dict:
        return {
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "confidence_source": self.source,
            "labels_seen": self.labels_seen,
            "status": "ok" if self.label is not None else "failed",
            "reason": self.reason,
        }


def _failed(reason: str, answered: bool = True) -> Answer:
    return Answer(None, reason=reason, answered=answered)


def _softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def _continues_word(rest: str) -> bool:
    return bool(rest) and (rest[0].isalnum() or rest[0] in "_\u200c")


def _fits(written: str, word: str, exact_case: bool) -> bool:
    """Can an answer that starts with ``written`` be ``word``? (``written`` may run past the word
    into punctuation or a closing quote, never into more letters.) Plain answers are read without
    regard to case; a JSON-schema enum is exact."""
    x, w = (written, word) if exact_case else (written.casefold(), word.casefold())
    return w.startswith(x) or (x.startswith(w) and not _continues_word(x[len(w) :]))


def labels_fitting(written: bytes, words: dict[str, tuple[str, ...]], exact_case: bool = False) -> list[str]:
    """Labels one of whose words ``written`` (bytes from the word's start) can still become; a
    trailing partial UTF-8 character is ignored. Empty text fits every label."""
    text = written.decode("utf-8", "ignore")
    if not text:
        return list(words)
    return [lab for lab, ws in words.items() if any(_fits(text, w, exact_case) for w in ws)]


def _alternatives(step: TokenStep) -> dict[bytes, float]:
    """The reported alternatives at a position, with the chosen token (a grammar may choose one
    outside the unconstrained top list)."""
    alts = {a.data: a.logprob for a in step.alternatives}
    alts.setdefault(step.chosen.data, step.chosen.logprob)
    return alts


def _normalised(mass: dict[str, float], floor: float, chosen: str | None, source: str) -> Answer:
    """P(chosen) over the labels; an unlisted label is given ``floor``, an upper bound on its own."""
    seen = sum(v > 0 for v in mass.values())
    filled = {lab: v if v > 0 else floor for lab, v in mass.items()}
    if chosen is None:
        chosen = max(mass, key=mass.__getitem__)
    return Answer(chosen, filled[chosen] / sum(filled.values()), source, labels_seen=seen)


def _least_listed(step: TokenStep) -> float:
    return math.exp(min(a.logprob for a in step.alternatives)) if step.alternatives else 0.0


def first_token_masses(step: TokenStep, words: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """``first_token_logprobs``: per label, the probability of the first-token alternatives that
    start that label's word only (leading whitespace removed)."""
    mass = {lab: 0.0 for lab in words}
    for data, logprob in _alternatives(step).items():
        fitting = labels_fitting(data.lstrip(), words) if data.strip() else []
        if len(fitting) == 1:
            mass[fitting[0]] += math.exp(logprob)
    return mass


def answer_masses(
    tokens: Sequence[TokenStep], start: int, label: str, words: dict[str, tuple[str, ...]], json_lead: bool
) -> tuple[dict[str, float], float, TokenStep] | str:
    """``answer_token_logprobs``: P(label) along the answer's path for an answer word that begins at
    byte ``start`` of the concatenated tokens — at each position from the word's start to its
    deciding token, the alternatives that can only become one label add the probability of the
    path so far times their own — with the upper bound for a label never listed (the largest path
    probability × least listed alternative) and the deciding token; a reason string when no token
    decides."""
    joined = b"".join(s.chosen.data for s in tokens)
    pos, path, floor = 0, 1.0, 0.0
    mass = {lab: 0.0 for lab in words}
    for step in tokens:
        s, e = pos, pos + len(step.chosen.data)
        pos = e
        if e <= start:
            continue
        lead = joined[s:start]  # bytes of this token before the word (e.g. ' "' of a JSON string)
        prefix = joined[start:s]  # the word as written before this token
        for data, logprob in _alternatives(step).items():
            if json_lead and lead:
                if not data.startswith(lead):
                    continue  # another structure (no opening quote, ...): not one of the answers
                written = data[len(lead) :]
            elif json_lead or prefix:
                written = prefix + data
            else:  # the start of a plain answer: whitespace before it does not matter
                written = data.lstrip()
            fitting = labels_fitting(written, words, json_lead) if written.strip() else []
            if len(fitting) == 1:
                mass[fitting[0]] += path * math.exp(logprob)
        floor = max(floor, path * _least_listed(step))
        if labels_fitting(joined[start:e], words, json_lead) == [label]:
            return mass, floor, step
        path *= math.exp(step.chosen.logprob)  # a shared prefix: the word goes on along this token
    return "no answer token decides between the label words"


def _word_start(tokens: Sequence[TokenStep], word: str, structured: bool) -> int | None:
    """Byte offset of the answer word in the concatenated tokens; None if they do not spell it."""
    joined = b"".join(s.chosen.data for s in tokens)
    target = word.encode("utf-8")
    if structured:
        match = _JSON_LABEL.search(joined)
        start = match.end() if match else -1
    else:
        start = len(joined) - len(joined.lstrip())
    return start if start >= 0 and joined[start : start + len(target)] == target else None


def _read_written(text: str, fmt: AnswerFormat, structured: bool) -> tuple[str | None, str, str]:
    """(label, the word as written, failure reason) for a written answer."""
    if structured:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            return None, "", f"not_json: {err.msg}: {text.strip()[:60]!r}"
        if not isinstance(obj, dict) or set(obj) != {"label"} or not isinstance(obj["label"], str):
            return None, "", f'schema_violation: expected exactly {{"label": <string>}}, got {text.strip()[:60]!r}'
        enum = fmt.schema["schema"]["properties"]["label"]["enum"] if fmt.schema else []
        by_word = {ws[0]: lab for lab, ws in fmt.words.items()}
        if obj["label"] not in enum:
            return None, "", f"schema_violation: {obj['label'][:40]!r} is not one of {enum}"
        return by_word[obj["label"]], obj["label"], ""
    answer = text.strip()
    for lab, ws in fmt.words.items():
        for w in ws:
            if answer.casefold() == w.casefold():
                return lab, answer, ""
    return (
        None,
        "",
        f"not_a_label_word: {answer[:60]!r} (accepted: {sorted(w for ws in fmt.words.values() for w in ws)})",
    )


def parse_result(result: Result, fmt: AnswerFormat) -> Answer:
    """label, confidence (with its source) or the failure reason for one annotator answer."""
    if not result.ok:
        answered = result.raw is not None  # the model answered, but unusably (length, empty, ...)
        return _failed(result.error or "unknown error", answered)
    if fmt.mode in ("classify", "score") and result.choice_logprobs is not None:
        by_word = {ws[0]: lab for lab, ws in fmt.words.items()}
        scores = {by_word.get(k, k): v for k, v in result.choice_logprobs.items()}
        if set(scores) != set(fmt.words):
            return _failed(f"wrong_choices: scores for {sorted(scores)}, expected {fmt.labels}")
        probs = _softmax(scores)
        best = max(probs, key=probs.__getitem__)
        source = "classifier" if fmt.mode == "classify" else "label_word_scores"
        return Answer(best, probs[best], source, labels_seen=len(probs))
    if fmt.mode == "score":
        if not result.tokens:
            return _failed("no_logprobs: the server returned no token logprobs to score label words")
        step = result.tokens[0]
        mass = first_token_masses(step, fmt.words)
        if not any(mass.values()):
            return _failed("no_label_in_top_logprobs: no listed first token starts a label word")
        if not step.alternatives:
            return _failed("no_logprobs: the server listed no alternatives for the first token")
        return _normalised(mass, _least_listed(step), None, "first_token_logprobs")
    if fmt.mode != "write":
        return _failed(f"unexpected answer shape for mode {fmt.mode}")
    structured = bool(fmt.schema) and result.structured
    label, word, reason = _read_written(result.text or "", fmt, structured)
    if label is None:
        return _failed(reason)
    if not result.tokens:
        return Answer(label, None, None)  # no logprobs: the confidence is absent, not guessed
    start = _word_start(result.tokens, word, structured)
    if start is None:
        return Answer(label, None, None, reason="confidence: token logprobs do not spell the answer")
    found = answer_masses(result.tokens, start, label, fmt.words, structured)
    if isinstance(found, str):
        return Answer(label, None, None, reason=f"confidence: {found}")
    mass, floor, step = found
    if not step.alternatives:
        return Answer(label, None, None, reason="confidence: the server listed no alternatives")
    return _normalised(mass, floor, label, "answer_token_logprobs")


def annotate_rows(pairs: Sequence[dict], answers: Sequence[Answer], annotator: str) -> list[dict]:
    if len(pairs) != len(answers):
        raise ValueError(f"{len(pairs)} pairs but {len(answers)} answers")
    return [{**p, "annotator": annotator, **a.row()} for p, a in zip(pairs, answers)]


def ask_until_parsed(
    build: Callable[[int], list[Request]],
    ask: Callable[[list[Request], Callable[[Result], Answer]], tuple],
    fmt: AnswerFormat,
    retries: int,
) -> tuple[list[Answer], list[int], object]:
    """Answers for ``build(0)``; rows whose answer came back but could not be read are asked again
    with ``build(attempt)`` (new per-sample seeds), at most ``retries`` times. ``ask(requests,
    keep)`` answers requests and returns ``keep`` of each result with its run statistics (e.g.
    ``run_requests(..., keep=keep)``): results are parsed as they arrive, so no response body
    outlives its parse. Returns the answers, the attempts each row took, and the merged stats."""
    parse = functools.partial(parse_result, fmt=fmt)
    answers, stats = ask(build(0), parse)
    answers = list(answers)
    attempts = [1] * len(answers)
    for attempt in range(1, retries + 1):
        redo = [i for i, a in enumerate(answers) if a.label is None and a.answered]
        if not redo:
            break
        fresh = build(attempt)
        more, more_stats = ask([fresh[i] for i in redo], parse)
        stats = stats.add(more_stats)
        for i, a in zip(redo, more):
            answers[i], attempts[i] = a, attempt + 1
    # the run's failure tallies are those of the rows as written, whatever pass answered them
    return (
        answers,
        attempts,
        stats.tally([a.reason if a.label is None else None for a in answers], sum(not a.answered for a in answers)),
    )
