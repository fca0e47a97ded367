"""A pair classifier over frozen Gemma token states: soft alignment, comparison, pooling, MLP.

Each pair is read **once** by the lower layers of the generator LM (Gemma 3 270M) as
``<bos> premise \n hypothesis``. The LM is causal, so the hypothesis tokens' states have seen the
premise — a cross-encoding for free, which is what lifts this model above n-gram and
embedding-alignment models — while the premise tokens' states are those of the premise alone. The
states are cached on disk, keyed by a hash of the model's files, the layers, the truncation length
and the text(s); texts never seen before (new synthetic rows) are computed on demand.

A small ESIM/decomposable-attention head is trained on those states with AdamW: project, soft-align
premise and hypothesis tokens, compare, mean+max pool, MLP. Optionally its class probabilities are
averaged with those of the hashed n-gram model (:class:`synthllm.classifier.HashingSGDClassifier`),
trained on the same phases. Every member is trained by gradient steps, so a regime's phases
continue one model: the head, its optimiser state and the n-gram weights carry over from one phase
to the next; only the learning-rate schedule restarts (a linear warm-up and decay per phase).

What this module deliberately does not do:

* fine-tune Gemma (one step of the 270M model takes seconds on a 2-core CPU; the states are frozen);
* choose its hyper-parameters — ``benchmarks/classifier_candidates.py`` did, on FarsTail val;
* evaluate, or know anything about regimes beyond the ordered phases it is given;
* keep Gemma's upper layers: only the layers up to the deepest one in ``layers`` are run;
* evict anything from the feature cache (about 0.6 GB for all of FarsTail at one layer), or lock it
  across processes: each writer adds its own shard, so concurrent writers can at worst store an
  entry twice, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from tqdm.auto import tqdm

from synthllm.params import NLI_LABELS, SklearnClassifierParams

Phase = tuple[pd.DataFrame, int]
# premise states, premise exact-match flags, hypothesis states, hypothesis flags (None: no premise)
Encoded = tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]
# premise states, premise token ids, hypothesis states (given the premise), hypothesis token ids
PairStates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
META_FILE = "pair_attention.json"


class GemmaAttentionParams(BaseModel):
    """Hyper-parameters chosen on FarsTail val (see ``benchmarks/results/classifier_candidates.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["gemma_attention"] = "gemma_attention"
    model_dir: str = Field("models/generator", description="Folder of the causal LM whose token "
                           "states are the features (the generator_model stage's output).")
    feature_cache: str | None = Field(
        ".cache/synthllm/gemma-features", description="Folder of the on-disk token-state cache, "
        "outside DVC outputs so it survives re-runs; null keeps states in memory only.")
    layers: list[int] = Field([6], min_length=1, max_length=8, description="Hidden-state layers "
                              "(0 = input embeddings) mixed by learned softmax weights.")
    max_tokens: int = Field(128, ge=8, le=1024, description="Tokens kept per text (after BOS).")
    hidden: int = Field(200, ge=8, le=2048, description="Width of the projection and comparison.")
    dropout: float = Field(0.3, ge=0, lt=1)
    learning_rate: float = Field(5e-4, gt=0, le=1, description="AdamW peak rate of each phase.")
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Of each phase's steps.")
    batch_size: int = Field(64, ge=1, le=4096)
    epoch_scale: float = Field(1.0, gt=0, le=10, description="Multiplies every phase's epoch count: "
                               "the regimes' epochs (train.gold_epochs…) are set for the n-gram model.")
    exact_match: bool = Field(True, description="Add a 'token occurs in the other text' input flag.")
    ngram_weight: float = Field(0.4, ge=0, le=1, description="Weight of the n-gram model in the "
                                "probability average; 0 trains and uses the attention head alone.")
    ngram: SklearnClassifierParams = Field(default_factory=SklearnClassifierParams,
                                           description="The n-gram ensemble member.")
    extract_batch_tokens: int = Field(2048, ge=64, le=1 << 20, description="Padded tokens per "
                                      "Gemma forward pass when filling the cache.")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads; null: torch's default.")

    @field_validator("layers")
    @classmethod
    def _layers_ok(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"layers {v}: distinct non-negative layer numbers")
        return sorted(v)


# ---------------------------------------------------------------------------------------------
# Token-state cache


def _model_fingerprint(model_dir: Path) -> str:
    """A hash of every file of the model folder: the folder is rebuilt in place by DVC, so its path
    says nothing about which weights it holds. Hashing 0.5 GB takes about a second."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.iterdir() if p.is_file()):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:20]


class PairStateCache:
    """Gemma token states of pairs, computed on demand and kept on disk in append-only shards.

    One forward pass reads ``<bos> premise \\n hypothesis``. Because the LM is causal, the premise
    tokens' states do not depend on the hypothesis: they are stored once per premise. The
    hypothesis tokens' states do depend on the premise (that is what makes them useful): they are
    stored per (premise, hypothesis). A single-text task has an empty premise and no separator.

    A shard is ``<id>.states.npy`` (float16, tokens × layers·hidden), ``<id>.tokens.npy`` (int32
    token ids) and ``<id>.index.json`` (entry key → token span), the index written last so that an
    interrupted write leaves no visible shard.
    """

    FORMAT = "pair-v1"  # bump when the input layout changes: it is part of every cache key

    def __init__(self, model_dir: str | Path, layers: Sequence[int], max_tokens: int,
                 cache_dir: str | Path | None, batch_tokens: int = 2048):
        self.model_dir = Path(model_dir)
        self.layers, self.max_tokens, self.batch_tokens = list(layers), max_tokens, batch_tokens
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir}: no model folder (config.json); build it with "
                                    "the generator_model stage or set model_dir")
        spec = f"{self.FORMAT}|{_model_fingerprint(self.model_dir)}|{self.layers}|{max_tokens}"
        self.dir = Path(cache_dir) / hashlib.sha256(spec.encode()).hexdigest()[:16] if cache_dir else None
        self._mem: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._disk: dict[str, tuple[str, int, int]] = {}
        self._shards: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lm = None
        self._tokenizer = None
        if self.dir and self.dir.is_dir():
            for index in sorted(self.dir.glob("*.index.json")):
                shard = index.name.removesuffix(".index.json")
                for key, (a, b) in json.loads(index.read_text()).items():
                    self._disk[key] = (shard, a, b)

    @staticmethod
    def premise_key(premise: str) -> str:
        return "p" + hashlib.sha1(premise.encode("utf-8")).hexdigest()

    @staticmethod
    def hypothesis_key(premise: str, hypothesis: str) -> str:
        return "h" + hashlib.sha1(f"{premise}\x00{hypothesis}".encode("utf-8")).hexdigest()

    def _has(self, key: str) -> bool:
        return key in self._mem or key in self._disk

    def get(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairStates]:
        """(premise states, premise token ids, hypothesis states, hypothesis token ids) per pair,
        in order; pairs the cache lacks are computed (and stored) first."""
        pairs = list(zip(premises, hypotheses))
        missing = list(dict.fromkeys(
            (p, h) for p, h in pairs
            if not self._has(self.hypothesis_key(p, h)) or not self._has(self.premise_key(p))))
        if missing:
            self._compute(missing)
        return [self._lookup(self.premise_key(p)) + self._lookup(self.hypothesis_key(p, h))
                for p, h in pairs]

    def _lookup(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key in self._mem:
            return self._mem[key]
        shard, a, b = self._disk[key]
        if shard not in self._shards:
            self._shards[shard] = (np.load(self.dir / f"{shard}.states.npy", mmap_mode="r"),
                                   np.load(self.dir / f"{shard}.tokens.npy", mmap_mode="r"))
        states, tokens = self._shards[shard]
        return states[a:b], tokens[a:b]

    def _load_lm(self):
        if self._lm is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
            body = lm.model if hasattr(lm, "model") else lm
            # the layers above the deepest one used cost time and change nothing
            body.layers = body.layers[:max(1, max(self.layers))]
            self._lm = body.eval()
        return self._lm, self._tokenizer

    def _input_ids(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int, int]]:
        """Token ids of each pass, where the premise ends and where the hypothesis starts (after
        BOS; the separator lies between). Premise and
        hypothesis are tokenised apart, so the premise's tokens (and states) are the same whatever
        hypothesis follows it, and the hypothesis's tokens the same whatever premise precedes."""
        tok = self._tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        sep = tok("\n", add_special_tokens=False)["input_ids"]
        unique = list(dict.fromkeys(p for p, _ in pairs if p))
        enc = tok(unique, add_special_tokens=False, truncation=True, max_length=self.max_tokens)
        prem = dict(zip(unique, enc["input_ids"])) if unique else {}
        hyp = tok([h for _, h in pairs], add_special_tokens=False, truncation=True,
                  max_length=self.max_tokens)["input_ids"]
        out = []
        for (p, _), h_ids in zip(pairs, hyp):
            p_ids = prem[p] if p else []
            between = sep if p else []
            out.append((bos + p_ids + between + h_ids, len(p_ids), len(p_ids) + len(between)))
        return out

    def _compute(self, pairs: list[tuple[str, str]]) -> None:
        lm, tokenizer = self._load_lm()
        inputs = self._input_ids(pairs)
        drop = 1 if tokenizer.bos_token_id is not None else 0  # BOS: an attention sink, no content
        order = sorted(range(len(pairs)), key=lambda i: len(inputs[i][0]))
        batches, cur = [], []
        for i in order:  # length-sorted batches under a padded-token budget: little padding
            if cur and (len(cur) + 1) * len(inputs[i][0]) > self.batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(i)
        batches.append(cur)
        new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        pad = tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in tqdm(batches, desc="gemma pair states", unit="batch",
                              disable=len(batches) < 4):
                width = max(len(inputs[i][0]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, :len(inputs[i][0])] = torch.tensor(inputs[i][0])
                    mask[r, :len(inputs[i][0])] = 1
                hidden = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                # RMS-normalised per token (as each layer's input norm does), so float16 holds them
                per_layer = []
                for layer in self.layers:
                    h = hidden[min(layer, len(hidden) - 1)].float()
                    per_layer.append(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
                states = torch.cat(per_layer, -1).numpy().astype(np.float16)
                for r, i in enumerate(batch):
                    (premise, hypothesis), (seq, p_end, h_start) = pairs[i], inputs[i]
                    ids_np = np.asarray(seq, np.int32)
                    p_end, h_start = p_end + drop, h_start + drop
                    new.setdefault(self.premise_key(premise),
                                   (states[r, drop:p_end], ids_np[drop:p_end]))
                    new[self.hypothesis_key(premise, hypothesis)] = (
                        states[r, h_start:len(seq)], ids_np[h_start:])
        self._mem.update(new)
        if self.dir:
            self._write_shard(new)

    def _write_shard(self, entries: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:12]
        items = list(entries.values())
        states = np.concatenate([s for s, _ in items])
        tokens = np.concatenate([t for _, t in items]).astype(np.int32)
        bounds = np.concatenate([[0], np.cumsum([len(t) for _, t in items])])
        for name, arr in (("states", states), ("tokens", tokens)):
            tmp = self.dir / f".{shard}.{name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, self.dir / f"{shard}.{name}.npy")
        index = {k: [int(bounds[i]), int(bounds[i + 1])] for i, k in enumerate(entries)}
        tmp = self.dir / f".{shard}.index.tmp"
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.dir / f"{shard}.index.json")
        for k, (a, b) in index.items():
            self._disk[k] = (shard, a, b)
            self._mem.pop(k, None)


# ---------------------------------------------------------------------------------------------
# The attention head


class AlignHead(nn.Module):
    """Project → soft-align premise and hypothesis tokens → compare [x, x̃, x−x̃, x⊙x̃] → mean+max
    pool → MLP. Without a premise (single-text tasks) it pools the projected hypothesis alone."""

    def __init__(self, n_layers: int, dim: int, hidden: int, dropout: float, exact_match: bool,
                 n_labels: int, pair: bool):
        super().__init__()
        self.n_layers, self.dim, self.pair, self.exact_match = n_layers, dim, pair, exact_match
        # fixed per-dimension standardisation, set from the first phase: Gemma's states have a few
        # dimensions ~100x larger than the rest, which a plain linear layer learns around badly
        for side in ("premise", "hypothesis"):
            self.register_buffer(f"{side}_mean", torch.zeros(n_layers, dim))
            self.register_buffer(f"{side}_std", torch.ones(n_layers, dim))
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(dim + int(exact_match and pair), hidden), nn.GELU())
        self.compare = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, hidden), nn.GELU())
        width = 2 * hidden * (2 if pair else 1)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_labels))

    def embed(self, x: torch.Tensor, mask: torch.Tensor, match: torch.Tensor | None,
              side: str) -> torch.Tensor:
        mean, std = getattr(self, f"{side}_mean"), getattr(self, f"{side}_std")
        x = (x.view(*x.shape[:2], self.n_layers, self.dim) - mean) / std
        x = (x * torch.softmax(self.mix, 0)[:, None]).sum(2)
        if match is not None:
            x = torch.cat([x, match.unsqueeze(-1)], -1)
        return self.proj(x) * mask.unsqueeze(-1)

    def forward(self, p: torch.Tensor, p_mask: torch.Tensor, p_match: torch.Tensor,
                h: torch.Tensor, h_mask: torch.Tensor, h_match: torch.Tensor) -> torch.Tensor:
        if not self.pair:
            return self.out(_pool(self.embed(h, h_mask, None, "hypothesis"), h_mask))
        em = self.exact_match
        a = self.embed(p, p_mask, p_match if em else None, "premise")
        b = self.embed(h, h_mask, h_match if em else None, "hypothesis")
        scores = a @ b.transpose(1, 2)
        neg = torch.finfo(scores.dtype).min
        a_aligned = torch.softmax(scores.masked_fill(h_mask[:, None, :] == 0, neg), -1) @ b
        b_aligned = torch.softmax(scores.transpose(1, 2).masked_fill(p_mask[:, None, :] == 0, neg), -1) @ a
        va = self.compare(torch.cat([a, a_aligned, a - a_aligned, a * a_aligned], -1))
        vb = self.compare(torch.cat([b, b_aligned, b - b_aligned, b * b_aligned], -1))
        return self.out(torch.cat([_pool(va, p_mask), _pool(vb, h_mask)], -1))


def _pool(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1)
    mean = (v * m).sum(1) / m.sum(1).clamp(min=1)
    top = v.masked_fill(m == 0, -1e4).max(1).values if v.shape[1] else torch.zeros_like(mean)
    return torch.cat([mean, top], -1)


def _pad(items: Sequence[np.ndarray], width: int, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(1, max(len(x) for x in items))
    out = torch.full((len(items), longest, width), fill, dtype=torch.float32)
    mask = torch.zeros((len(items), longest))
    for r, x in enumerate(items):
        if len(x):
            out[r, :len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32))
            mask[r, :len(x)] = 1
    return out, mask


def _exact_match(tokens: np.ndarray, other: np.ndarray) -> np.ndarray:
    return np.isin(tokens, other).astype(np.float32)


def _weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The classifier


class GemmaAttentionClassifier:
    kind = "gemma_attention"

    def __init__(self, params: GemmaAttentionParams, labels: Sequence[str] = NLI_LABELS,
                 pair: bool = True):
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.states = PairStateCache(params.model_dir, params.layers, params.max_tokens,
                                      params.feature_cache, params.extract_batch_tokens)
        self.head: AlignHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.ngram = None
        if params.ngram_weight > 0:
            from synthllm.classifier import HashingSGDClassifier

            self.ngram = HashingSGDClassifier(params.ngram, self.labels, pair)

    # -- inputs

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[Encoded]:
        """Per row: premise states, premise exact-match flags, hypothesis states and flags."""
        if not self.pair:
            premises = [""] * len(hypotheses)
        rows = self.states.get(list(premises), list(hypotheses))
        if not self.pair:
            return [(None, None, hs, None) for _, _, hs, _ in rows]
        return [(ps, _exact_match(pt, ht), hs, _exact_match(ht, pt)) for ps, pt, hs, ht in rows]

    def _batch(self, rows: Sequence[Encoded]) -> tuple[torch.Tensor, ...]:
        width = len(self.params.layers) * self.head.dim
        h, h_mask = _pad([r[2] for r in rows], width)
        if not self.pair:
            return h[:, :0], h_mask[:, :0], h_mask[:, :0], h, h_mask, h_mask
        p, p_mask = _pad([r[0] for r in rows], width)
        p_match, _ = _pad([r[1][:, None] for r in rows], 1)
        h_match, _ = _pad([r[3][:, None] for r in rows], 1)
        return p, p_mask, p_match.squeeze(-1), h, h_mask, h_match.squeeze(-1)

    def _build(self, rows: pd.DataFrame) -> None:
        encoded = self._encode(list(rows["premise"]), list(rows["hypothesis"]))
        n_layers = len(self.params.layers)
        dim = encoded[0][2].shape[1] // n_layers
        self.head = AlignHead(n_layers, dim, self.params.hidden, self.params.dropout,
                              self.params.exact_match, len(self.labels), self.pair)
        # premise and hypothesis states come from different positions and contexts, so each side
        # gets its own standardisation; a premise counts once however many hypotheses it has
        sides = {"hypothesis": [r[2] for r in encoded]}
        if self.pair:
            sides["premise"] = list({p: r[0] for p, r in zip(rows["premise"], encoded)}.values())
        for side, arrays in sides.items():
            x = torch.from_numpy(np.concatenate([np.asarray(a, np.float32) for a in arrays]))
            x = x.view(-1, n_layers, dim)
            getattr(self.head, f"{side}_mean").copy_(x.mean(0))
            getattr(self.head, f"{side}_std").copy_(x.std(0) + 1e-3)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=self.params.learning_rate,
                                           weight_decay=self.params.weight_decay)

    # -- training

    def fit_phases(self, phases: Sequence[Phase], seed: int) -> list[dict]:
        if self.params.threads:
            torch.set_num_threads(self.params.threads)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        phases = [(rows.reset_index(drop=True), epochs) for rows, epochs in phases if len(rows)]
        if not phases:
            raise ValueError("fit_phases needs at least one phase with rows")
        if self.head is None:
            self._build(phases[0][0])
        if self.ngram is not None:
            self.ngram.fit_phases(phases, seed)
        log = []
        for k, (rows, epochs) in enumerate(phases):
            start = _weights_digest(self.head)
            steps, loss = self._train_phase(rows, epochs, rng, f"phase {k}")
            log.append({"phase": k, "rows": int(len(rows)), "epochs": epochs, "steps": steps,
                        "train_loss": round(loss, 6), "weights_start": start,
                        "weights_end": _weights_digest(self.head)})
        return log

    def _train_phase(self, rows: pd.DataFrame, epochs: int, rng: np.random.Generator,
                     desc: str) -> tuple[int, float]:
        encoded = self._encode(list(rows["premise"]), list(rows["hypothesis"]))
        y = torch.tensor([self.labels.index(lab) for lab in rows["label"]])
        lengths = np.array([len(r[2]) + (len(r[0]) if self.pair else 0) for r in encoded], float)
        bs = self.params.batch_size
        steps_per_epoch = (len(rows) + bs - 1) // bs
        total = max(1, round(self.params.epoch_scale * epochs * steps_per_epoch))
        warm = max(1, int(self.params.warmup_fraction * total))
        for group in self.optimizer.param_groups:  # each phase restarts its schedule from the peak
            group["lr"] = group["initial_lr"] = self.params.learning_rate
        schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / total))
        self.head.train()
        losses: list[float] = []
        with tqdm(total=total, desc=desc, unit="step", mininterval=5) as bar:
            while len(losses) < total:
                # batches of similar length (jittered, so they differ between epochs): less padding
                order = np.argsort(lengths + rng.uniform(0, 10, len(lengths)))
                batches = [order[i:i + bs] for i in range(0, len(order), bs)]
                for b in rng.permutation(len(batches))[:total - len(losses)]:
                    idx = batches[b]
                    logits = self.head(*self._batch([encoded[i] for i in idx]))
                    loss = nn.functional.cross_entropy(logits, y[idx])
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    schedule.step()
                    losses.append(float(loss))
                    bar.update(1)
        return total, float(np.mean(losses[-steps_per_epoch:]))

    # -- prediction

    def head_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("the classifier is not trained: call fit_phases or load first")
        premises, hypotheses = list(premises), list(hypotheses)
        self.head.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(hypotheses), 256):
                rows = self._encode(premises[i:i + 256], hypotheses[i:i + 256])
                out.append(torch.softmax(self.head(*self._batch(rows)), -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        proba = self.head_proba(premises, hypotheses)
        w = self.params.ngram_weight
        if self.ngram is not None and w > 0 and len(proba):
            proba = (1 - w) * proba + w * self.ngram.predict_proba(list(premises), list(hypotheses))
        return proba.astype(np.float64) / proba.sum(1, keepdims=True)

    # -- persistence

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), out_dir / "head.pt")
        if self.ngram is not None:
            self.ngram.save(out_dir / "ngram")
        (out_dir / META_FILE).write_text(json.dumps(
            {"kind": self.kind, "params": self.params.model_dump(), "labels": list(self.labels),
             "pair": self.pair}, ensure_ascii=False, indent=1))


def load(model_dir: Path) -> GemmaAttentionClassifier:
    """A saved classifier; the Gemma folder (``params.model_dir``) is only read for texts that are
    not in the feature cache yet."""
    from synthllm.classifier import load_classifier

    info = json.loads((model_dir / META_FILE).read_text())
    params = GemmaAttentionParams(**info["params"])
    clf = GemmaAttentionClassifier(params, info["labels"], info["pair"])
    state = torch.load(model_dir / "head.pt", weights_only=True)
    n_layers, dim = state["hypothesis_mean"].shape
    clf.head = AlignHead(n_layers, dim, params.hidden, params.dropout, params.exact_match,
                         len(clf.labels), clf.pair)
    clf.head.load_state_dict(state)
    clf.head.eval()
    if clf.ngram is not None:
        clf.ngram = load_classifier(model_dir / "ngram")
    return clf
