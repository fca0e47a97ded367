"""Local causal LM through transformers: sampling and choice scoring on CPU or GPU.

Sampling runs on :class:`~synthllm.backends.local_engine.SlotEngine` (continuous batching over
``batch_size`` slots, each request with its own generator seeded by its ``seed``): a row's text
depends on its request alone, not on what else runs, so a resumed or enlarged run writes the same
text for the rows it shares with a cold one. Choice scoring sums the log-probabilities of each
choice's tokens after the prompt; when every choice is a single token, one forward pass over the
prompt scores all of them. Scoring batches have one of a few fixed shapes (``batch_size`` rows × a
multiple of PAD_MULTIPLE tokens, :func:`~synthllm.backends.local_engine.padded`), so a row's scores
do not depend on its batch either, which in bfloat16 they otherwise would. This backend does not
serve chat messages (base models have no chat template).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from synthllm.backends.base import Backend, Request, Result, Usage, fingerprint
from synthllm.backends.local_engine import NucleusSampler, SlotEngine, cache_length
from synthllm.errors import BackendError
from synthllm.lm_passes import Prefixes, Segment, fuse_rms_norms, packed_passes, use_packed_attention

# part of the backend's identity, so of every cache key: answers of an earlier engine (whose texts
# differ in rounding) are not served as this one's
ENGINE = "slots-v1"


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
        fuse_rms_norms(self.model)
        use_packed_attention(self.model)
        self.pad_id = self.tokenizer.pad_token_id
        self.computed_tokens = 0  # prompt tokens run through the model (benchmarks: shared prefixes count once)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])

    @property
    def identity(self) -> str:
        # in bfloat16 the logits depend on the batch's shape, and so on batch_size (never on what shares
        # a batch): answers computed at another batch_size are not this one's
        return f"transformers:{self._fingerprint}:{self.dtype}:{ENGINE}:batch-{self.batch_size}"

    def run(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Generation requests through the slot engine, one pool per sampling set-up and cache
        length; scoring requests in batches of one padded prompt length (sorted by length: less
        padding, 1.4x faster). Results come out as they finish, each with its index."""
        self.check(requests)
        lengths = [len(ids) for ids in self.tokenizer([r.prompt or "" for r in requests])["input_ids"]]
        yield from self._run_scoring(requests, [i for i, r in enumerate(requests) if r.kind == "score"])
        pools: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            if r.kind == "complete":
                pools.setdefault((r.temperature, r.top_p, cache_length(lengths[i], r.max_new_tokens)), []).append(i)
        engine = SlotEngine(self.model, self.tokenizer, self.batch_size, self.eos_ids)
        for (temperature, top_p, _), idx in sorted(pools.items()):
            prompts = self.tokenizer([requests[i].prompt for i in idx], add_special_tokens=True)["input_ids"]
            jobs = [(i, requests[i], ids) for i, ids in zip(idx, prompts)]
            for i, res in engine.run(jobs, NucleusSampler(temperature, top_p)):
                yield i, res.with_raw()

    @torch.inference_mode()
    def _run_scoring(self, requests: Sequence[Request], scoring: list[int]) -> Iterator[tuple[int, Result]]:
        """Scoring requests by shared prefix and choices: a prefix's keys and values are computed once,
        then the rows' own tokens in packed passes (:func:`~synthllm.backends.local_engine.packed_passes`),
        whose results for a row do not depend on what shares its pass. Each choice's log-probability
        is read from the logits after the row (single-token choices: one position) or after each of
        the choice's tokens, appended to the row."""
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for i in scoring:
            r = requests[i]
            groups.setdefault(((r.prompt or "")[: r.shared_prefix], _choices(r)), []).append(i)
        for (prefix, choices), idx in groups.items():
            prefixes = Prefixes()
            head = self.tokenizer(prefix)["input_ids"] if prefix else []
            if head:
                for _ in packed_passes(self.model, [Segment(head)], prefixes, self.pad_id, record=True, logits_at=[[]]):
                    self.computed_tokens += len(head)
            texts = [(requests[i].prompt or "")[len(prefix) :] for i in idx]
            own = self.tokenizer(texts, add_special_tokens=not prefix)["input_ids"]
            tails = self._choice_ids(choices)
            single = all(len(t) == 1 for t in tails)
            g = 0 if head else -1
            segments = (
                [Segment(ids, g) for ids in own] if single else [Segment(ids + t, g) for ids in own for t in tails]
            )
            at = (
                [[len(ids) - 1] for ids in own]
                if single
                else [list(range(len(ids) - 1, len(ids) + len(t) - 1)) for ids in own for t in tails]
            )
            per_row = 1 if single else len(tails)
            logp: dict[int, torch.Tensor] = {}
            for chunk, _, out in packed_passes(self.model, segments, prefixes, self.pad_id, logits_at=at):
                self.computed_tokens += sum(len(segments[k].tokens) for k in chunk)
                rows = torch.log_softmax(out.logits[0].float(), -1).split([len(at[k]) for k in chunk])
                logp.update(zip(chunk, rows))
            for j, i in enumerate(idx):
                if single:
                    scores = [float(logp[j][0, t[0]]) for t in tails]
                else:
                    scores = [float(logp[j * per_row + c][range(len(t)), t].sum()) for c, t in enumerate(tails)]
                usage = Usage(len(head) + len(own[j]), 0)
                yield (
                    i,
                    Result(choice_logprobs=dict(zip(choices, scores)), finish_reason="stop", usage=usage).with_raw(),
                )

    def _choice_ids(self, choices: tuple[str, ...]) -> list[list[int]]:
        return [self.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in choices]

    def close(self) -> None:
        del self.model
