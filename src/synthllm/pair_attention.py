"""A pair classifier over frozen Gemma token states: soft alignment, comparison, pooling, MLP.

Every premise and hypothesis is run through the lower layers of the generator LM (Gemma 3 270M)
**once**; its per-token hidden states are cached on disk, keyed by a hash of the model's files, the
layers, the truncation length and the text. A small ESIM/decomposable-attention head is trained on
those states with AdamW, and its class probabilities are averaged with those of the hashed n-gram
model (:class:`synthllm.classifier.HashingSGDClassifier`), trained on the same phases.

Both members are trained by gradient steps, so a regime's phases continue one model: the head, its
optimiser state and the n-gram weights all carry over from one phase to the next; only the learning
rate schedule restarts (a linear warm-up and decay per phase).

What this module deliberately does not do:

* fine-tune Gemma (one step of the 270M model takes seconds on a 2-core CPU; the states are frozen);
* choose its hyper-parameters — ``benchmarks/classifier_candidates.py`` did, on FarsTail val;
* evaluate, or know anything about regimes beyond the ordered phases it is given;
* share the feature cache safely between processes writing the *same* new texts at once (each writer
  adds its own shard, so the worst case is a duplicated entry, never a torn one).
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


class TokenStateCache:
    """Per-token hidden states of texts, computed on demand and kept on disk in append-only shards.

    A shard is ``<id>.states.npy`` (float16, tokens × layers·hidden), ``<id>.tokens.npy`` (int32
    token ids) and ``<id>.index.json`` (text key → token span), the index written last so that an
    interrupted write leaves no visible shard.
    """

    def __init__(self, model_dir: str | Path, layers: Sequence[int], max_tokens: int,
                 cache_dir: str | Path | None, batch_tokens: int = 2048):
        self.model_dir = Path(model_dir)
        self.layers, self.max_tokens, self.batch_tokens = list(layers), max_tokens, batch_tokens
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir}: no model folder (config.json); build it with "
                                    "the generator_model stage or set model_dir")
        spec = f"{_model_fingerprint(self.model_dir)}|{self.layers}|{max_tokens}"
        self._spec = hashlib.sha256(spec.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / self._spec if cache_dir else None
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
    def key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def get(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(states, token ids) per text, in order; missing texts are computed and stored first."""
        keys = [self.key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in self._mem and k not in self._disk}
        if missing:
            self._compute(list(missing.keys()), list(missing.values()))
        return [self._lookup(k) for k in keys]

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
            # the layers above the deepest one used cost time and memory and change nothing
            body.layers = body.layers[:max(1, max(self.layers))]
            self._lm = body.eval()
        return self._lm, self._tokenizer

    def _compute(self, keys: list[str], texts: list[str]) -> None:
        lm, tokenizer = self._load_lm()
        ids = tokenizer(texts, truncation=True, max_length=self.max_tokens + 1)["input_ids"]
        has_bos = tokenizer.bos_token_id is not None
        # the BOS state is an attention sink, the same for every text: it carries no information
        ids = [x if has_bos and x and x[0] == tokenizer.bos_token_id else
               ([tokenizer.bos_token_id] if has_bos else []) + x for x in ids]
        drop = 1 if has_bos else 0
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        batches, cur = [], []
        for i in order:  # length-sorted batches under a padded-token budget: little padding
            if cur and (len(cur) + 1) * len(ids[i]) > self.batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pad = tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in tqdm(batches, desc="gemma token states", unit="batch",
                              disable=len(batches) < 4):
                width = max(len(ids[i]) for i in batch)
                inp = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    inp[r, :len(ids[i])] = torch.tensor(ids[i])
                    mask[r, :len(ids[i])] = 1
                hidden = lm(input_ids=inp, attention_mask=mask, output_hidden_states=True).hidden_states
                # RMS-normalised per token (as each layer's input norm does), so float16 holds them
                per_layer = []
                for layer in self.layers:
                    h = hidden[min(layer, len(hidden) - 1)].float()
                    per_layer.append(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
                states = torch.cat(per_layer, -1).numpy().astype(np.float16)
                for r, i in enumerate(batch):
                    n = len(ids[i]) - drop
                    results[i] = (states[r, drop:drop + n], np.asarray(ids[i][drop:], np.int32))
        for i, k in enumerate(keys):
            self._mem[k] = results[i]
        if self.dir:
            self._write_shard(keys, [results[i] for i in range(len(keys))])

    def _write_shard(self, keys: list[str], items: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:12]
        width = items[0][0].shape[1]
        states = np.concatenate([s for s, _ in items]) if items else np.zeros((0, width), np.float16)
        tokens = np.concatenate([t for _, t in items]).astype(np.int32)
        bounds = np.concatenate([[0], np.cumsum([len(t) for _, t in items])])
        for name, arr in (("states", states), ("tokens", tokens)):
            tmp = self.dir / f".{shard}.{name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, self.dir / f"{shard}.{name}.npy")
        index = {k: [int(bounds[i]), int(bounds[i + 1])] for i, k in enumerate(keys)}
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
        self.register_buffer("mean", torch.zeros(n_layers, dim))
        self.register_buffer("std", torch.ones(n_layers, dim))
        self.register_buffer("standardised", torch.tensor(False))
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(dim + int(exact_match and pair), hidden), nn.GELU())
        self.compare = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, hidden), nn.GELU())
        width = 2 * hidden * (2 if pair else 1)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_labels))

    def embed(self, x: torch.Tensor, mask: torch.Tensor, match: torch.Tensor | None) -> torch.Tensor:
        x = (x.view(*x.shape[:2], self.n_layers, self.dim) - self.mean) / self.std
        x = (x * torch.softmax(self.mix, 0)[:, None]).sum(2)
        if match is not None:
            x = torch.cat([x, match.unsqueeze(-1)], -1)
        return self.proj(x) * mask.unsqueeze(-1)

    def forward(self, p: torch.Tensor, p_mask: torch.Tensor, p_match: torch.Tensor,
                h: torch.Tensor, h_mask: torch.Tensor, h_match: torch.Tensor) -> torch.Tensor:
        if not self.pair:
            return self.out(_pool(self.embed(h, h_mask, None), h_mask))
        em = self.exact_match
        a = self.embed(p, p_mask, p_match if em else None)
        b = self.embed(h, h_mask, h_match if em else None)
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
        self.states = TokenStateCache(params.model_dir, params.layers, params.max_tokens,
                                      params.feature_cache, params.extract_batch_tokens)
        self.head: AlignHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.ngram = None
        if params.ngram_weight > 0:
            from synthllm.classifier import HashingSGDClassifier

            self.ngram = HashingSGDClassifier(params.ngram, self.labels, pair)

    # -- inputs

    def _batch(self, premises: Sequence[str], hypotheses: Sequence[str]) -> tuple[torch.Tensor, ...]:
        hyp = self.states.get(hypotheses)
        prem = self.states.get(premises) if self.pair else [(s[:0], t[:0]) for s, t in hyp]
        width = hyp[0][0].shape[1] if hyp else len(self.params.layers) * self.head.dim
        p, p_mask = _pad([s for s, _ in prem], width)
        h, h_mask = _pad([s for s, _ in hyp], width)
        p_match, _ = _pad([_exact_match(pt, ht)[:, None] for (_, pt), (_, ht) in zip(prem, hyp)], 1)
        h_match, _ = _pad([_exact_match(ht, pt)[:, None] for (_, pt), (_, ht) in zip(prem, hyp)], 1)
        return p, p_mask, p_match.squeeze(-1), h, h_mask, h_match.squeeze(-1)

    def _build(self, rows: pd.DataFrame) -> None:
        texts = list(dict.fromkeys(rows["hypothesis"]))
        if self.pair:
            texts += list(dict.fromkeys(rows["premise"]))
        states = np.concatenate([np.asarray(s, np.float32) for s, _ in self.states.get(texts)])
        n_layers = len(self.params.layers)
        dim = states.shape[1] // n_layers
        self.head = AlignHead(n_layers, dim, self.params.hidden, self.params.dropout,
                              self.params.exact_match, len(self.labels), self.pair)
        per_layer = torch.from_numpy(states).view(-1, n_layers, dim)
        self.head.mean.copy_(per_layer.mean(0))
        self.head.std.copy_(per_layer.std(0) + 1e-3)
        self.head.standardised.fill_(True)
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
        ngram_log = self.ngram.fit_phases(phases, seed) if self.ngram is not None else None
        log = []
        for k, (rows, epochs) in enumerate(phases):
            start = _weights_digest(self.head)
            loss = self._train_phase(rows, epochs, rng, f"phase {k}")
            entry = {"phase": k, "rows": int(len(rows)), "epochs": epochs,
                     "train_loss": round(loss, 6), "weights_start": start,
                     "weights_end": _weights_digest(self.head)}
            log.append(entry)
        return log

    def _train_phase(self, rows: pd.DataFrame, epochs: int, rng: np.random.Generator,
                     desc: str) -> float:
        premises, hypotheses = list(rows["premise"]), list(rows["hypothesis"])
        y = torch.tensor([self.labels.index(lab) for lab in rows["label"]])
        # materialise the phase's states once (computing any the cache lacks) before the clock of
        # the epochs starts; lengths drive the bucketing below
        self.states.get(list(dict.fromkeys(hypotheses + (premises if self.pair else []))))
        lengths = np.array([len(self.states.get([h])[0][1]) +
                            (len(self.states.get([p])[0][1]) if self.pair else 0)
                            for p, h in zip(premises, hypotheses)], dtype=float)
        bs = self.params.batch_size
        steps_per_epoch = (len(rows) + bs - 1) // bs
        total = max(1, epochs * steps_per_epoch)
        warm = max(1, int(self.params.warmup_fraction * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / total))
        self.head.train()
        losses = []
        with tqdm(total=total, desc=desc, unit="step", mininterval=5) as bar:
            for _ in range(epochs):
                # batches of similar length (jittered, so they differ between epochs): less padding
                order = np.argsort(lengths + rng.uniform(0, 10, len(lengths)))
                batches = [order[i:i + bs] for i in range(0, len(order), bs)]
                for b in rng.permutation(len(batches)):
                    idx = batches[b]
                    logits = self.head(*self._batch([premises[i] for i in idx],
                                                    [hypotheses[i] for i in idx]))
                    loss = nn.functional.cross_entropy(logits, y[idx])
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    schedule.step()
                    losses.append(float(loss))
                    bar.update(1)
        # the next phase builds its own schedule from the base rate
        for group in self.optimizer.param_groups:
            group["lr"] = self.params.learning_rate
        return float(np.mean(losses[-steps_per_epoch:])) if losses else float("nan")

    # -- prediction

    def head_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("the classifier is not trained: call fit_phases or load first")
        premises, hypotheses = list(premises), list(hypotheses)
        self.head.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(hypotheses), 128):
                batch = self._batch(premises[i:i + 128], hypotheses[i:i + 128])
                out.append(torch.softmax(self.head(*batch), -1).numpy())
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
    n_layers, dim = state["mean"].shape
    clf.head = AlignHead(n_layers, dim, params.hidden, params.dropout, params.exact_match,
                         len(clf.labels), clf.pair)
    clf.head.load_state_dict(state)
    clf.head.eval()
    if clf.ngram is not None:
        clf.ngram = load_classifier(model_dir / "ngram")
    return clf
