"""The local generator's engine: sampling from a transformers causal LM through a fixed set of slots.

Each slot holds one request, with its own row of a static key/value cache and its own position. A
request is prefilled alone (its prompt right-padded to a multiple of :data:`PAD_MULTIPLE` tokens),
then decoded one token per step together with whatever holds the other slots; a slot whose request
finishes takes the next one at once (continuous batching), so no request waits for the longest of a
batch, and no step pays for rows that already stopped. Every step runs at one shape (slots × cache
length) and every slot's keys past its own position are masked, so a request's logits, and with its
own seeded generator its text, are the same bit for bit whatever runs beside it and in whichever
slot: a row's text depends on its request alone (tests/integration/test_local_backend.py, and
test_gemma_batch_invariance.py on the real Gemma 3).

Sampling is temperature + nucleus (top-p) with one ``torch.Generator`` per request, one draw per
token. The nucleus is looked for among the ``top_k`` most likely tokens, then among the tokens above
a probability floor, and only then by sorting the whole vocabulary: the same nucleus with the same
renormalised probabilities as the full sort (tests/unit/test_sampler.py).

What it deliberately does not do: beam search, speculative decoding, sharing a prompt's prefill
between requests (the default's prompts differ after a few dozen tokens: their few-shot examples are
drawn per request), chat templates, or scoring (the backend scores with one batched forward pass).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from synthllm.calls import Request, Result, Usage
from synthllm.lm_passes import CHUNK, Prefixes, Segment, packed_passes

PAD_MULTIPLE = 64
CACHE_MULTIPLE = 512  # a slot's cache length: prompt (padded) + max_new_tokens, rounded up to this


def padded(n_tokens: int) -> int:
    """The length a prompt of ``n_tokens`` is padded to: the next multiple of PAD_MULTIPLE, so that a
    prompt's forward pass has one of a few shapes, whatever else runs."""
    return -(-n_tokens // PAD_MULTIPLE) * PAD_MULTIPLE


def cache_length(prompt_tokens: int, max_new_tokens: int) -> int:
    """Slots' key/value length for a request: a function of the request alone, so that its decode
    steps run at the same shape in any run (requests of another length class run in another pool)."""
    need = padded(prompt_tokens) + max_new_tokens
    return -(-need // CACHE_MULTIPLE) * CACHE_MULTIPLE


class NucleusSampler:
    """Temperature + nucleus sampling, one generator per row (a request's own seed); ``None`` for a
    row samples greedily (temperature 0). The nucleus (the smallest set of most likely tokens whose
    mass reaches ``top_p``) is looked for among the ``top_k`` most likely tokens, one batched ``topk``
    per step; a row whose ``top_k`` candidates hold less than ``top_p`` sorts the tokens above a
    probability floor, and only if those hold less than ``top_p`` too, its whole vocabulary."""

    FLOORS = (1e-4, 1e-6)

    def __init__(self, temperature: float, top_p: float, top_k: int = 256):
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        # rows whose nucleus needed a sort above a floor / of the whole vocabulary (benchmarks)
        self.floor_sorts = self.full_sorts = 0

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

    def draw(self, logits: torch.Tensor, generators: Sequence[torch.Generator | None]) -> list[int]:
        """One token per row of ``logits`` (rows × vocabulary), each from its own generator."""
        if self.temperature <= 0:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return [
            int(order[torch.multinomial(p / p.sum(), 1, generator=g)])
            for (p, order), g in zip(zip(*self.nucleus(probs)), generators)
        ]


class SlotCache:
    """Static key/value rows, one per slot, for every layer: what a model's attention layers call
    ``cache.update`` on in a decode step (each slot's new key goes to that slot's position, and
    attention reads the whole rows, masked past each slot's position). A prompt's keys are copied in
    from its packed prefill."""

    def __init__(self, config, slots: int, length: int, dtype: torch.dtype):
        kv_heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (slots, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.rows = torch.arange(slots)
        self.positions = torch.zeros(slots, dtype=torch.long)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[self.rows, :, self.positions] = key[:, :, 0]
        v[self.rows, :, self.positions] = value[:, :, 0]
        return k, v


def _by_layer_type(config, allowed: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor):
    """The 4-D boolean attention mask(s) (True: attend) that a model's layers take as they are:
    ``allowed`` (batch × 1 × queries × keys), narrowed to the sliding window for layers that have one
    (keys within ``window`` positions of the query). ``query_pos``: batch × queries; ``key_pos``:
    batch × keys, or keys. A model with several layer types (Gemma 3: sliding and full) gets a mask
    per type; one with a window on every layer (Mistral), that mask."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return allowed
    key_pos = key_pos if key_pos.dim() == 2 else key_pos[None]
    sliding = allowed & (key_pos[:, None, None, :] > query_pos[:, None, :, None] - window)
    types = getattr(config, "layer_types", None)
    if not types:
        return sliding
    return {t: sliding if t == "sliding_attention" else allowed for t in set(types)}


@dataclass
class _Running:
    index: int
    request: Request
    prompt_tokens: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)


class SlotEngine:
    """Generates ``complete`` requests that share their sampling set-up (temperature, top_p) through
    ``slots`` slots. :meth:`run` yields (index, Result) as each request finishes."""

    def __init__(self, model, tokenizer, slots: int, eos_ids: Sequence[int]):
        self.model, self.tokenizer, self.slots = model, tokenizer, slots
        self.config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.eos = set(eos_ids)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.dtype = next(model.parameters()).dtype

    def run(
        self, jobs: Sequence[tuple[int, Request, list[int]]], sampler: NucleusSampler
    ) -> Iterator[tuple[int, Result]]:
        """``jobs``: (index, request, prompt token ids), all of one cache length (:func:`cache_length`)."""
        if not jobs:
            return
        length = cache_length(len(jobs[0][2]), jobs[0][1].max_new_tokens)
        cache = SlotCache(self.config, self.slots, length, self.dtype)
        queue = deque(jobs)
        running: list[_Running | None] = [None] * self.slots
        last = torch.full((self.slots,), self.pad, dtype=torch.long)
        with torch.inference_mode():
            while queue or any(job is not None for job in running):
                free = [s for s, job in enumerate(running) if job is None]
                # free slots take the next requests, prefilled together in one packed pass: once as many
                # are free as fill a pass (a slot waiting costs nothing: every step has one shape), or
                # when nothing else runs or the queue is nearly done
                fill = _fits(queue, CHUNK)
                if queue and (len(free) >= min(fill, len(queue)) or len(free) == self.slots):
                    taken = [queue.popleft() for _ in range(min(len(free), fill))]
                    for s, (index, request, ids), logits in zip(free, taken, self._prefill(cache, free, taken)):
                        job = _Running(index, request, len(ids), _generator(request, sampler))
                        token = sampler.draw(logits[None], [job.generator])[0]
                        if (res := self._push(job, token)) is not None:
                            yield job.index, res
                        else:
                            running[s], last[s], cache.positions[s] = job, token, len(ids)
                    continue
                active = [(s, job) for s, job in enumerate(running) if job is not None]
                logits = self._decode(cache, last)
                tokens = sampler.draw(logits[[s for s, _ in active]], [job.generator for _, job in active])
                for (s, job), token in zip(active, tokens):
                    if (res := self._push(job, token)) is not None:
                        running[s] = None
                        cache.positions[s] = 0
                        yield job.index, res
                    else:
                        last[s] = token
                        cache.positions[s] += 1

    def _prefill(
        self, cache: SlotCache, slots: list[int], taken: list[tuple[int, Request, list[int]]]
    ) -> list[torch.Tensor]:
        """The prompts' forward passes (packed: each prompt's results are its own), their keys and
        values copied into the slots' rows: each prompt's next-token logits (vocab)."""
        prefixes = Prefixes()
        segments = [Segment(ids) for _, _, ids in taken]
        logits: list[torch.Tensor] = [torch.empty(0)] * len(taken)
        passes = packed_passes(
            self.model, segments, prefixes, self.pad, record=True, logits_at=[[len(s.tokens) - 1] for s in segments]
        )
        for members, _, out in passes:
            for k, row in zip(members, out.logits[0]):
                logits[k] = row
        for layer, keys in prefixes.keys.items():
            for slot, key, value in zip(slots, keys, prefixes.values[layer]):
                cache.keys[layer][slot, :, : key.shape[1]] = key
                cache.values[layer][slot, :, : value.shape[1]] = value
        return logits

    def _decode(self, cache: SlotCache, last: torch.Tensor) -> torch.Tensor:
        """One step for every slot: next-token logits, slots × vocab."""
        keys = torch.arange(cache.keys[0].shape[2])
        allowed = (keys[None, :] <= cache.positions[:, None])[:, None, None, :]  # slots × 1 × 1 × keys
        masks = _by_layer_type(self.config, allowed, cache.positions[:, None], keys)
        out = self.model(
            input_ids=last[:, None],
            position_ids=cache.positions[:, None],
            attention_mask=masks,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _push(self, job: _Running, token: int) -> Result | None:
        """Add a sampled token; the request's Result once it has finished (EOS, a stop string, or
        max_new_tokens), else None."""
        job.tokens.append(token)
        r = job.request
        text = None
        stopped = token in self.eos
        if not stopped and r.stop:
            window = max(len(s.encode("utf-8")) for s in r.stop) + 4
            tail = self.tokenizer.decode(job.tokens[-window:], skip_special_tokens=True)
            stopped = any(s in tail for s in r.stop)
        if not stopped and len(job.tokens) < r.max_new_tokens:
            return None
        text = str(self.tokenizer.decode(job.tokens, skip_special_tokens=True))
        cut = [text.find(s) for s in r.stop if s in text]
        if cut:
            text = text[: min(cut)]
        return Result(
            text=text,
            finish_reason="stop" if stopped or cut else "length",
            usage=Usage(job.prompt_tokens, len(job.tokens)),
        )


def _fits(queue: deque, size: int) -> int:
    """How many of the queue's first prompts fit in one packed pass of ``size`` tokens (at least one)."""
    used = count = 0
    for _, _, ids in queue:
        if count and used + len(ids) > size:
            break
        used, count = used + len(ids), count + 1
    return max(1, count)


def _generator(request: Request, sampler: NucleusSampler) -> torch.Generator | None:
    return torch.Generator().manual_seed(int(request.seed)) if sampler.temperature > 0 else None
