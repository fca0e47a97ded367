"""Local causal LM through transformers: batched sampling and choice scoring on CPU or GPU.

Sampling draws each row's tokens from its own generator, seeded by that request's ``seed``, so a
row's text depends on its request alone, not on what else shares its batch: a resumed or enlarged
run writes the same text for the rows it shares with a cold one. Every batch has one of a few
fixed shapes (``batch_size`` rows × a multiple of PAD_MULTIPLE tokens, :func:`_padded`), so the
logits do not depend on batch shape either, which in bfloat16 would change sampled text.
Choice scoring sums the log-probabilities of each choice's tokens after
the prompt; when every choice is a single token, one forward pass over the prompt scores all of them.
This backend does not serve chat messages (base models have no chat template).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from synthllm.backends.base import Backend, Request, Result, Usage, fingerprint
from synthllm.errors import BackendError


class _StopOnStrings(StoppingCriteria):
    """Per-row stop once the generated text contains a stop string. (transformers' own
    ``stop_strings`` needs a tokenizer whose vocabulary it can parse, which not every one is.)

    Only the newest tokens are decoded at each step: a stop string that was not in the text one
    step ago must end in the newest token, and a stop string of ``b`` UTF-8 bytes spans at most
    ``b`` tokens, so decoding the last ``b + 4`` tokens finds it. A miss would only cost steps
    (the returned text is cut at the first stop string of the full decode either way)."""

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        self.window = max(len(s.encode("utf-8")) for s in stops) + 4
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.Tensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        todo = (~self.done).nonzero().flatten().tolist()
        tails = self.tokenizer.batch_decode(input_ids[todo, start:], skip_special_tokens=True)
        for row, tail in zip(todo, tails):
            self.done[row] = any(s in tail for s in self.stops)
        return self.done.clone().to(input_ids.device)


class _PerRowSampler(LogitsProcessor):
    """Temperature + nucleus sampling with one generator per row. It returns scores that are -inf
    everywhere but the sampled token, so that ``generate`` run greedily picks exactly that token;
    each row consumes one draw of its own generator per step, whatever its batch.

    The nucleus (the smallest set of most likely tokens whose mass reaches ``top_p``) is looked for
    among the ``top_k`` most likely tokens, one batched ``topk`` per step; a row whose ``top_k``
    candidates hold less than ``top_p`` of the mass sorts the tokens above a probability floor, and
    only if those hold less than ``top_p`` too, its whole vocabulary. Either
    way the draw is from the same nucleus with the same renormalised probabilities
    (tests/unit/test_sampler.py compares the two by a chi-square test over many draws)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int = 256):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        # rows whose nucleus needed a sort above a floor / of the whole vocabulary (benchmarks)
        self.floor_sorts = self.full_sorts = 0

    FLOORS = (1e-4, 1e-6)

    def nucleus(self, probs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per row: the nucleus tokens' probabilities (most likely first) and their token ids."""
        top_p, top_idx = probs.topk(min(self.top_k, probs.shape[-1]), dim=-1)
        covered = (top_p.cumsum(-1)[:, -1] >= self.top_p).tolist()
        out_p, out_idx = [], []
        for row, ok in enumerate(covered):
            p, order = (top_p[row], top_idx[row]) if ok else self._candidates(probs[row])
            # the smallest set of most likely tokens whose mass reaches top_p (the first always stays)
            n = int(((p.cumsum(0) - p) < self.top_p).sum())
            out_p.append(p[:n])
            out_idx.append(order[:n])
        return out_p, out_idx

    def _candidates(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All tokens above a probability floor, sorted, once their mass reaches top_p (then the
        nucleus, a prefix of the sorted vocabulary, lies among them); else the whole vocabulary."""
        for floor in self.FLOORS:
            cand = (probs >= floor).nonzero().flatten()
            p, order = probs[cand].sort(descending=True)
            if len(p) and float(p.cumsum(0)[-1]) >= self.top_p:
                self.floor_sorts += 1
                return p, cand[order]
        self.full_sorts += 1
        return probs.sort(descending=True)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for row, (p, order) in enumerate(zip(*self.nucleus(probs))):
            pick = order[torch.multinomial(p / p.sum(), 1, generator=self.generators[row])]
            out[row, pick] = 0.0
        return out


def _sampling_key(r: Request) -> tuple:
    """What the requests of one batch must share (a score batch's choices set its tail width)."""
    return (r.kind, r.temperature, r.top_p, r.max_new_tokens, r.stop, r.choices if r.kind == "score" else None)


PAD_MULTIPLE = 64


def _padded(n_tokens: int) -> int:
    """The length a prompt of ``n_tokens`` is left-padded to: the next multiple of PAD_MULTIPLE.
    Batches hold prompts of one padded length only and are filled up to ``batch_size`` rows, so
    every kernel sees the same shapes whatever else shares the batch, and a row's logits, bit for
    bit, are a function of the row alone. In bfloat16 a row's text otherwise moved with its batch:
    8 of 30 texts equal between batches of 30 and 7 with padding to the batch's longest prompt; with
    fixed padded lengths 30 of 30, but 0 of 6 in batches of one (other matmul kernels)."""
    return -(-n_tokens // PAD_MULTIPLE) * PAD_MULTIPLE


def _choices(request: Request) -> tuple[str, ...]:
    if request.choices is None:
        raise BackendError("a score request needs choices (the labels to score)")
    return request.choices


class TransformersBackend(Backend):
    kinds = frozenset({"complete", "score"})

    def __init__(
        self, model_dir: str | Path, *, dtype: str = "float32", batch_size: int = 16, threads: int | None = None
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise BackendError(
                f"{self.model_dir}: no saved model here (config.json missing); run "
                f"`dvc repro generator_model` or set backend.model_dir"
            )
        if threads:
            torch.set_num_threads(threads)
        self.batch_size, self.dtype = batch_size, dtype
        self._fingerprint = fingerprint(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, dtype))
        self.model.eval()

    @property
    def identity(self) -> str:
        return f"transformers:{self._fingerprint}:{self.dtype}"

    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Batches of requests of one kind, sampling set-up and padded prompt length (:func:`_padded`;
        sorted by length, less padding: scoring ran 1.4x faster for it); results come out in batch
        order, each with its index."""
        self.check(requests)
        lengths = [len(ids) for ids in self.tokenizer([r.prompt or "" for r in requests])["input_ids"]]
        keys = [(repr(_sampling_key(r)), _padded(n)) for r, n in zip(requests, lengths)]
        order = sorted(range(len(requests)), key=lambda i: (keys[i], lengths[i], i))
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and keys[batches[-1][0]] == keys[i]:
                batches[-1].append(i)
            else:
                batches.append([i])
        for idx in batches:
            # a short batch is filled up with copies of its first request (whose rows then sample the
            # same tokens and stop with it), so that every batch of a padded length has one shape
            batch = [requests[i] for i in idx] + [requests[idx[0]]] * (self.batch_size - len(idx))
            results = self._score(batch) if batch[0].kind == "score" else self._generate(batch)
            for i, res in zip(idx, results):
                yield i, res.with_raw()

    @torch.inference_mode()
    def _generate(self, batch: list[Request]) -> list[Result]:
        first = batch[0]
        if any(
            (r.temperature, r.top_p, r.max_new_tokens, r.stop)
            != (first.temperature, first.top_p, first.max_new_tokens, first.stop)
            for r in batch
        ):
            raise BackendError("requests in one generation batch must share sampling parameters")
        enc = self.tokenizer(
            [r.prompt for r in batch],
            return_tensors="pt",
            padding=True,
            pad_to_multiple_of=PAD_MULTIPLE,
            add_special_tokens=True,
        )
        sampler = (
            [_PerRowSampler([r.seed for r in batch], first.temperature, first.top_p)] if first.temperature > 0 else []
        )
        stopping = StoppingCriteriaList(
            [_StopOnStrings(self.tokenizer, first.stop, enc["input_ids"].shape[1])] if first.stop else []
        )
        out = self.model.generate(
            **enc,
            max_new_tokens=first.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=None,
            logits_processor=LogitsProcessorList(sampler),
            stopping_criteria=stopping,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        results = []
        for row, req, mask in zip(new, batch, enc["attention_mask"]):
            ids = [int(t) for t in row if int(t) != self.tokenizer.pad_token_id]
            text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
            cut = [text.find(s) for s in req.stop if s in text]
            stopped = bool(cut) or (len(ids) < req.max_new_tokens)
            if cut:
                text = text[: min(cut)]
            results.append(
                Result(text=text, finish_reason="stop" if stopped else "length", usage=Usage(int(mask.sum()), len(ids)))
            )
        return results

    def _choice_ids(self, choices: tuple[str, ...]) -> list[list[int]]:
        return [self.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in choices]

    @torch.inference_mode()
    def _score(self, batch: list[Request]) -> list[Result]:
        """Log-probability of each choice after its prompt. Sequences are left-padded so every
        choice ends at the last position and only the last few positions need logits (the full
        vocabulary × sequence logits of a 262k-vocabulary model would not fit in memory)."""
        choices = [_choices(r) for r in batch]
        choice_ids = [self._choice_ids(c) for c in choices]
        if all(len(ids) == 1 for cids in choice_ids for ids in cids):
            prompts = [r.prompt for r in batch]
            tails: list[list[list[int]]] = [[[]] for _ in batch]
        else:
            prompts = [r.prompt for r, c in zip(batch, choices) for _ in c]
            tails = [[ids] for cids in choice_ids for ids in cids]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, pad_to_multiple_of=PAD_MULTIPLE)
        keep = 1 + max(len(t[0]) for t in tails)
        if keep > 1:
            extra = [t[0] for t in tails]
            width = max(map(len, extra))
            pad = self.tokenizer.pad_token_id
            # left-pad the choice tails too, so that all sequences end together
            ids = [[pad] * (width - len(e)) + row.tolist() + e for e, row in zip(extra, enc["input_ids"])]
            mask = [
                [0] * (width - len(e)) + row.tolist() + [1] * len(e) for e, row in zip(extra, enc["attention_mask"])
            ]
            enc = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**enc, position_ids=position_ids, logits_to_keep=keep).logits
        logp = torch.log_softmax(logits.float(), -1)
        results, row = [], 0
        for rc, cids in zip(choices, choice_ids):
            scores = {}
            for choice, cand in zip(rc, cids):
                if keep == 1:
                    scores[choice] = float(logp[row, -1, cand[0]])
                else:
                    scores[choice] = float(sum(logp[row, keep - 1 - len(cand) + k, t] for k, t in enumerate(cand)))
                    row += 1
            if keep == 1:
                row += 1
            n_prompt = int(enc["attention_mask"][row - 1].sum())
            results.append(Result(choice_logprobs=scores, finish_reason="stop", usage=Usage(n_prompt, 0)))
        return results

    def close(self) -> None:
        del self.model
