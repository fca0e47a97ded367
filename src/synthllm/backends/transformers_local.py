"""Local causal LM through transformers: batched sampling and choice scoring on CPU or GPU.

Sampling draws each row's tokens from its own generator, seeded by that request's ``seed``, so a
row's text depends on its request alone, not on what else shares its batch: a resumed or enlarged
run writes the same text for the rows it shares with a cold one (up to floating-point effects of
batch shape on the logits, which would have to land within ~1e-6 of a sampling boundary to show).
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
    ``stop_strings`` needs a tokenizer whose vocabulary it can parse, which not every one is.)"""

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


class _PerRowSampler(LogitsProcessor):
    """Temperature + nucleus sampling with one generator per row. It returns scores that are -inf
    everywhere but the sampled token, so that ``generate`` run greedily picks exactly that token;
    each row consumes one draw of its own generator per step, whatever its batch."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            p, order = probs[row].sort(descending=True)
            # the smallest set of most likely tokens whose mass reaches top_p (the first always stays)
            keep = (p.cumsum(0) - p) < self.top_p
            p = p * keep
            pick = order[torch.multinomial(p / p.sum(), 1, generator=gen)]
            out[row, pick] = 0.0
        return out


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
        self.check(requests)
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            results = self._score(batch) if batch[0].kind == "score" else self._generate(batch)
            for j, res in enumerate(results):
                yield start + j, res.with_raw()

    @torch.inference_mode()
    def _generate(self, batch: list[Request]) -> list[Result]:
        first = batch[0]
        if any(
            (r.temperature, r.top_p, r.max_new_tokens, r.stop)
            != (first.temperature, first.top_p, first.max_new_tokens, first.stop)
            for r in batch
        ):
            raise BackendError("requests in one generation batch must share sampling parameters")
        enc = self.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True, add_special_tokens=True)
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
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
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
