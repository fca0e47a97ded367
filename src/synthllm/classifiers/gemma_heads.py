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

import copy
import hashlib
import json
import os
import random
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from synthllm.io import fingerprint
from synthllm.params import NLI_LABELS, GemmaAttentionParams

Phase = tuple[pd.DataFrame, int]  # or synthllm.regimes.Phase: anything with .rows and .epochs
# premise states, premise exact-match flags, hypothesis states, hypothesis flags (None: no premise)
Encoded = tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]
# premise states, premise token ids, hypothesis states (given the premise), hypothesis token ids
PairStates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
META_FILE = "pair_attention.json"


# ---------------------------------------------------------------------------------------------
# Token-state cache


def feature_dir(params: GemmaAttentionParams) -> Path | None:
    """Where the token states are cached: ``feature_cache``, a relative one under
    ``$SYNTHLLM_CACHE_DIR`` when that is set (as the request cache moves with it)."""
    if params.feature_cache is None:
        return None
    path, root = Path(params.feature_cache), os.environ.get("SYNTHLLM_CACHE_DIR")
    return Path(root) / path if root and not path.is_absolute() else path


class PairStateCache:
    """Gemma token states of pairs, computed on demand and kept on disk in append-only shards.

    One forward pass reads ``<bos> premise \\n hypothesis``. Because the LM is causal, the premise
    tokens' states do not depend on the hypothesis: they are stored once per premise. The
    hypothesis tokens' states depend on the premise (that is what makes them useful): they are
    stored per (premise, hypothesis). With ``condition_on_premise=False`` (an ablation) the
    hypothesis is read alone, as is a single-text task's text.

    Each layer has its own folder, so a model mixing layers 4 and 6 reuses what models on layer 4 or
    layer 6 cached. A shard is ``<id>.states.npy`` (float16, tokens × hidden), ``<id>.tokens.npy``
    (int32 token ids) and ``<id>.index.json`` (entry key → token span), the index written last so
    that an interrupted write leaves no visible shard.
    """

    FORMAT = "pair-v2"  # bump when what is stored changes: it is part of every folder's key

    def __init__(
        self,
        model_dir: str | Path,
        layers: Sequence[int],
        max_tokens: int,
        cache_dir: str | Path | None,
        condition_on_premise: bool = True,
        batch_tokens: int = 2048,
    ):
        self.model_dir = Path(model_dir)
        self.layers, self.max_tokens, self.batch_tokens = list(layers), max_tokens, batch_tokens
        self.condition_on_premise = condition_on_premise
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model_dir}: no model folder (config.json); build it with "
                "the generator_model stage or set model_dir"
            )
        self.fingerprint = model = fingerprint(self.model_dir)
        self.dirs = (
            {
                layer: Path(cache_dir)
                / hashlib.sha256(f"{self.FORMAT}|{model}|{layer}|{max_tokens}".encode()).hexdigest()[:16]
                for layer in self.layers
            }
            if cache_dir
            else {}
        )
        self._mem: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {layer: {} for layer in self.layers}
        self._disk: dict[int, dict[str, tuple[str, int, int]]] = {layer: {} for layer in self.layers}
        self._shards: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._lm = None
        self._tokenizer = None
        for layer, folder in self.dirs.items():
            for index in sorted(folder.glob("*.index.json")) if folder.is_dir() else []:
                shard = index.name.removesuffix(".index.json")
                for key, (a, b) in json.loads(index.read_text()).items():
                    self._disk[layer][key] = (shard, a, b)

    @staticmethod
    def premise_key(premise: str) -> str:
        return "p" + hashlib.sha1(premise.encode("utf-8")).hexdigest()

    @staticmethod
    def hypothesis_key(premise: str, hypothesis: str) -> str:
        return "h" + hashlib.sha1(f"{premise}\x00{hypothesis}".encode()).hexdigest()

    def _has(self, key: str) -> bool:
        return all(key in self._mem[layer] or key in self._disk[layer] for layer in self.layers)

    def get(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairStates]:
        """(premise states, premise token ids, hypothesis states, hypothesis token ids) per pair,
        in order, states of the layers side by side; what the cache lacks is computed first."""
        pairs = list(zip(premises, hypotheses))
        context = (lambda p: p) if self.condition_on_premise else (lambda p: "")
        passes: dict[tuple[str, str], None] = {}
        for p, h in pairs:
            if not self._has(self.hypothesis_key(context(p), h)):
                passes[(context(p), h)] = None
            if not self._has(self.premise_key(p)):
                passes[(p, h) if self.condition_on_premise else (p, "")] = None
        if passes:
            self._compute(list(passes))
        return [self._lookup(self.premise_key(p)) + self._lookup(self.hypothesis_key(context(p), h)) for p, h in pairs]

    def _lookup(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for layer in self.layers:
            if key in self._mem[layer]:
                parts.append(self._mem[layer][key])
                continue
            shard, a, b = self._disk[layer][key]
            if (layer, shard) not in self._shards:
                folder = self.dirs[layer]
                self._shards[layer, shard] = (
                    np.load(folder / f"{shard}.states.npy", mmap_mode="r"),
                    np.load(folder / f"{shard}.tokens.npy", mmap_mode="r"),
                )
            states, tokens = self._shards[layer, shard]
            parts.append((states[a:b], tokens[a:b]))
        states = parts[0][0] if len(parts) == 1 else np.concatenate([s for s, _ in parts], axis=1)
        return states, parts[0][1]

    def _load_lm(self):
        if self._lm is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
            body = lm.model if hasattr(lm, "model") else lm
            if max(self.layers) > len(body.layers):
                raise ValueError(
                    f"layers {self.layers}: {self.model_dir} has {len(body.layers)} layers (0 is the input embeddings)"
                )
            # the layers above the deepest one used cost time and change nothing
            body.layers = body.layers[: max(1, max(self.layers))]
            # transformers reports the last layer's state after the final norm; without it every
            # layer's state is the raw residual stream, whichever layer happens to be the deepest
            body.norm = nn.Identity()
            self._lm = body.eval()
        return self._lm, self._tokenizer

    def _input_ids(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int, int]]:
        """Token ids of each pass, where the premise ends and where the hypothesis starts (after
        BOS; the separator lies between). Premise and hypothesis are tokenised apart, so a text's
        tokens are the same whatever it is paired with."""
        tok = self._tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        sep = tok("\n", add_special_tokens=False)["input_ids"]
        texts = list(dict.fromkeys(t for pair in pairs for t in pair if t))
        ids = (
            dict(
                zip(
                    texts,
                    tok(texts, add_special_tokens=False, truncation=True, max_length=self.max_tokens)["input_ids"],
                )
            )
            if texts
            else {}
        )
        out = []
        for p, h in pairs:
            p_ids, between = (ids[p], sep) if p else ([], [])
            out.append((bos + p_ids + between + (ids[h] if h else []), len(p_ids), len(p_ids) + len(between)))
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
        new: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {layer: {} for layer in self.layers}
        pad = tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in tqdm(
                batches, desc="gemma pair states", unit="batch", mininterval=10, disable=len(batches) < 4
            ):
                width = max(len(inputs[i][0]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, : len(inputs[i][0])] = torch.tensor(inputs[i][0])
                    mask[r, : len(inputs[i][0])] = 1
                hidden = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                for layer in self.layers:
                    h = hidden[layer].float()
                    # RMS-normalised per token (as the next layer's input norm does): a few of
                    # Gemma's dimensions are ~100x the rest, and float16 must hold them
                    h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).numpy()
                    for r, i in enumerate(batch):
                        (premise, hypothesis), (seq, p_end, h_start) = pairs[i], inputs[i]
                        seq_np = np.asarray(seq, np.int32)
                        p_end, h_start = p_end + drop, h_start + drop
                        new[layer].setdefault(
                            self.premise_key(premise), (h[r, drop:p_end].astype(np.float16), seq_np[drop:p_end])
                        )
                        new[layer][self.hypothesis_key(premise, hypothesis)] = (
                            h[r, h_start : len(seq)].astype(np.float16),
                            seq_np[h_start:],
                        )
        for layer, entries in new.items():
            # a pass runs every layer; a layer that already holds an entry keeps it, so the
            # cache never stores one twice
            entries = {k: v for k, v in entries.items() if k not in self._mem[layer] and k not in self._disk[layer]}
            if not entries:
                continue
            self._mem[layer].update(entries)
            if layer in self.dirs:
                self._write_shard(layer, entries)

    def _write_shard(self, layer: int, entries: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        folder = self.dirs[layer]
        folder.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:12]
        items = list(entries.values())
        bounds = np.concatenate([[0], np.cumsum([len(t) for _, t in items])])
        for name, arr in (
            ("states", np.concatenate([s for s, _ in items])),
            ("tokens", np.concatenate([t for _, t in items]).astype(np.int32)),
        ):
            tmp = folder / f".{shard}.{name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, folder / f"{shard}.{name}.npy")
        index = {k: [int(bounds[i]), int(bounds[i + 1])] for i, k in enumerate(entries)}
        tmp = folder / f".{shard}.index.tmp"
        tmp.write_text(json.dumps(index))
        os.replace(tmp, folder / f"{shard}.index.json")
        for k, (a, b) in index.items():
            self._disk[layer][k] = (shard, a, b)
            self._mem[layer].pop(k, None)


# ---------------------------------------------------------------------------------------------
# The attention head


class AlignHead(nn.Module):
    """Project → soft-align premise and hypothesis tokens → compare [x, x̃, x−x̃, x⊙x̃] → mean+max
    pool → MLP. Without a premise (single-text tasks) it pools the projected hypothesis alone."""

    def __init__(
        self, n_layers: int, dim: int, hidden: int, dropout: float, exact_match: bool, n_labels: int, pair: bool
    ):
        super().__init__()
        self.n_layers, self.dim, self.pair, self.exact_match = n_layers, dim, pair, exact_match
        # fixed per-dimension standardisation, set from the first phase: Gemma's states have a few
        # dimensions ~100x larger than the rest, which a plain linear layer learns around badly
        for side in ("premise", "hypothesis"):
            self.register_buffer(f"{side}_mean", torch.zeros(n_layers, dim))
            self.register_buffer(f"{side}_std", torch.ones(n_layers, dim))
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim + int(exact_match and pair), hidden), nn.GELU())
        self.compare = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, hidden), nn.GELU())
        width = 2 * hidden * (2 if pair else 1)
        self.out = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels)
        )

    def embed(self, x: torch.Tensor, mask: torch.Tensor, match: torch.Tensor | None, side: str) -> torch.Tensor:
        mean, std = getattr(self, f"{side}_mean"), getattr(self, f"{side}_std")
        x = (x.view(*x.shape[:2], self.n_layers, self.dim) - mean) / std
        x = (x * torch.softmax(self.mix, 0)[:, None]).sum(2)
        if match is not None:
            x = torch.cat([x, match.unsqueeze(-1)], -1)
        return self.proj(x) * mask.unsqueeze(-1)

    def forward(
        self,
        p: torch.Tensor,
        p_mask: torch.Tensor,
        p_match: torch.Tensor,
        h: torch.Tensor,
        h_mask: torch.Tensor,
        h_match: torch.Tensor,
    ) -> torch.Tensor:
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


class PooledHead(nn.Module):
    """The mean of the hypothesis token states — which, read after the premise, already carry the
    comparison — standardised, layer-mixed, then an MLP. An order of magnitude cheaper to train
    than :class:`AlignHead`: the pooled vectors are computed once per phase."""

    def __init__(self, n_layers: int, dim: int, hidden: int, dropout: float, n_labels: int):
        super().__init__()
        self.n_layers, self.dim = n_layers, dim
        # standardisation of the pooled vectors, set from the first phase (see AlignHead)
        self.register_buffer("hypothesis_mean", torch.zeros(n_layers, dim))
        self.register_buffer("hypothesis_std", torch.ones(n_layers, dim))
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.out = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = (pooled.view(-1, self.n_layers, self.dim) - self.hypothesis_mean) / self.hypothesis_std
        return self.out((x * torch.softmax(self.mix, 0)[:, None]).sum(1))


def _make_head(params: GemmaAttentionParams, n_layers: int, dim: int, n_labels: int, pair: bool) -> nn.Module:
    if params.head == "pooled":
        return PooledHead(n_layers, dim, params.hidden, params.dropout, n_labels)
    return AlignHead(n_layers, dim, params.hidden, params.dropout, params.exact_match, n_labels, pair)


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
            out[r, : len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32))
            mask[r, : len(x)] = 1
    return out, mask


def _mean_state(states: np.ndarray) -> np.ndarray:
    x = np.asarray(states, np.float32)
    return x.mean(0) if len(x) else np.zeros(x.shape[1], np.float32)


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


def _noop(epoch: int) -> None:
    pass


class GemmaAttentionClassifier:
    """The :class:`synthllm.classifier.PairClassifier` contract (``fit_phase`` per phase,
    ``snapshot``/``restore``, ``predict_proba``, ``save``), plus ``fit_phases`` for a whole regime.

    ``seed`` is accepted for ``build_classifier``'s signature and not needed: the head is built at
    the first ``fit_phase``, right after seeding with that phase's seed."""

    kind = "gemma_attention"

    def __init__(
        self,
        params: GemmaAttentionParams,
        labels: Sequence[str] = NLI_LABELS,
        pair: bool = True,
        seed: int | None = None,
    ):
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.states = PairStateCache(
            params.model_dir,
            params.layers,
            params.max_tokens,
            feature_dir(params),
            params.condition_on_premise,
            params.extract_batch_tokens,
        )
        self.head: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.ngram = None
        self.live = None  # set by the train stage; nothing is logged to it here
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

    def _inputs(self, encoded: list[Encoded]) -> Callable[[np.ndarray], tuple[torch.Tensor, ...]]:
        """The head's input tensors for a batch of row indices."""
        if self.params.head == "pooled":
            pooled = torch.from_numpy(np.stack([_mean_state(r[2]) for r in encoded]))
            return lambda idx: (pooled[idx],)
        return lambda idx: self._batch([encoded[i] for i in idx])

    def _build(self, rows: pd.DataFrame, encoded: list[Encoded]) -> None:
        n_layers = len(self.params.layers)
        dim = encoded[0][2].shape[1] // n_layers
        self.head = _make_head(self.params, n_layers, dim, len(self.labels), self.pair)
        # premise and hypothesis states come from different positions and contexts, so each side
        # gets its own standardisation; a premise counts once however many hypotheses it has
        if self.params.head == "pooled":
            sides = {"hypothesis": [_mean_state(r[2])[None] for r in encoded]}
        else:
            sides = {"hypothesis": [r[2] for r in encoded]}
            if self.pair:
                sides["premise"] = list({p: r[0] for p, r in zip(rows["premise"], encoded)}.values())
        for side, arrays in sides.items():
            x = torch.from_numpy(np.concatenate([np.asarray(a, np.float32) for a in arrays]))
            x = x.view(-1, n_layers, dim)
            getattr(self.head, f"{side}_mean").copy_(x.mean(0))
            getattr(self.head, f"{side}_std").copy_(x.std(0) + 1e-3)
        self.optimizer = _optimizer(self.head, self.params)

    # -- training

    def fit_phases(self, phases: Sequence[Phase], seed: int) -> list[dict]:
        """A whole regime: each (rows, epochs) phase in order, on the same weights."""
        log = []
        for k, phase in enumerate(phases):
            rows, epochs = (phase.rows, phase.epochs) if hasattr(phase, "rows") else phase
            entry = self.fit_phase(rows, epochs, seed, k, _noop)
            log.append({"phase": k, "rows": int(len(rows)), "epochs": epochs, **entry})
        return log

    def fit_phase(
        self,
        rows: pd.DataFrame,
        epochs: int,
        seed: int,
        phase: int,
        after_epoch: Callable[[int], None] = _noop,
        work_dir: Path | None = None,
    ) -> dict:
        """``epochs`` passes (times ``epoch_scale``) over ``rows``, continuing the current weights
        and optimiser state. Randomness depends on (seed, phase) only, so a run resumed from a
        phase checkpoint is the same run. ``work_dir`` is unused: a phase takes minutes at most."""
        if self.params.threads:
            torch.set_num_threads(self.params.threads)
        if len(rows) == 0:
            raise ValueError(f"phase {phase} has no rows")
        rows = rows.reset_index(drop=True)
        encoded = self._encode(list(rows["premise"]), list(rows["hypothesis"]))
        if self.head is None:
            # built here rather than in __init__: its input width and standardisation come from
            # the first rows it is given; seeded first, so a seed always builds the same head
            torch.manual_seed(seed)
            self._build(rows, encoded)
        phase_seed = int(np.random.SeedSequence([seed, phase]).generate_state(1)[0])
        random.seed(phase_seed)
        torch.manual_seed(phase_seed)
        rng = np.random.default_rng([seed, phase])
        start = _weights_digest(self.head)
        steps, loss = self._train(rows, encoded, epochs, seed, phase, rng, after_epoch)
        return {
            "steps": steps,
            "train_loss": round(loss, 6),
            "weights_start": start,
            "weights_end": _weights_digest(self.head),
        }

    def _train(
        self,
        rows: pd.DataFrame,
        encoded: list[Encoded],
        epochs: int,
        seed: int,
        phase: int,
        rng: np.random.Generator,
        after_epoch: Callable[[int], None],
    ) -> tuple[int, float]:
        y = torch.tensor([self.labels.index(lab) for lab in rows["label"]])
        inputs = self._inputs(encoded)
        lengths = np.array([len(r[2]) + (len(r[0]) if self.pair else 0) for r in encoded], float)
        bs = self.params.batch_size
        steps_per_epoch = (len(rows) + bs - 1) // bs
        total = max(epochs, round(self.params.epoch_scale * epochs * steps_per_epoch))
        warm = max(1, int(self.params.warmup_fraction * total))
        for group in self.optimizer.param_groups:  # each phase restarts its schedule from the peak
            group["lr"] = group["initial_lr"] = self.params.learning_rate
        schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / total)
        )

        def batches():
            while True:  # passes of batches of similar length (jittered, so passes differ): less padding
                order = np.argsort(lengths + rng.uniform(0, 10, len(lengths)))
                chunks = [order[i : i + bs] for i in range(0, len(order), bs)]
                yield from (chunks[b] for b in rng.permutation(len(chunks)))

        stream, losses = batches(), []
        # a scaled epoch is total/epochs steps, so after_epoch is called once per requested epoch
        bounds = np.linspace(0, total, epochs + 1).round().astype(int)
        with tqdm(total=total, desc=f"phase {phase}", unit="step", mininterval=5) as bar:
            for epoch in range(epochs):
                if self.ngram is not None:  # one n-gram pass per epoch: snapshots stay in step
                    self.ngram.fit_phase(rows, 1, seed, phase * 1000 + epoch, _noop)
                self.head.train()
                for _ in range(bounds[epoch + 1] - bounds[epoch]):
                    idx = next(stream)
                    loss = nn.functional.cross_entropy(self.head(*inputs(idx)), y[idx])
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    schedule.step()
                    losses.append(loss.item())
                    bar.update(1)
                after_epoch(epoch)
        return total, float(np.mean(losses[-steps_per_epoch:]))

    def snapshot(self) -> object:
        return copy.deepcopy(
            {
                "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ngram": self.ngram.snapshot() if self.ngram is not None else None,
            }
        )

    def restore(self, snapshot: object) -> None:
        state = copy.deepcopy(snapshot)
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ngram is not None:
            self.ngram.restore(state["ngram"])

    # -- prediction

    def head_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("the classifier is not trained: call fit_phase or load first")
        premises, hypotheses = list(premises), list(hypotheses)
        self.head.eval()
        out = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(hypotheses), 256), desc="predict", unit="batch", disable=len(hypotheses) < 2048):
                inputs = self._inputs(self._encode(premises[i : i + 256], hypotheses[i : i + 256]))
                idx = np.arange(min(256, len(hypotheses) - i))
                out.append(torch.softmax(self.head(*inputs(idx)), -1).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.labels)))

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        proba = self.head_proba(premises, hypotheses)
        w = self.params.ngram_weight
        if self.ngram is not None and len(proba):
            proba = (1 - w) * proba + w * self.ngram.predict_proba(list(premises), list(hypotheses))
        return proba / proba.sum(1, keepdims=True)

    # -- persistence

    def save(self, out_dir: Path) -> None:
        """The head, its optimiser state (so a resumed regime continues exactly), the n-gram
        member and the fingerprint of the LM whose states it reads (so a folder trained on other
        weights differs, for DVC, and is refused at load); the feature cache stays where it is."""
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), out_dir / "head.pt")
        torch.save(self.optimizer.state_dict(), out_dir / "optimizer.pt")
        if self.ngram is not None:
            self.ngram.save(out_dir / "ngram")
        (out_dir / META_FILE).write_text(
            json.dumps(
                {
                    "kind": self.kind,
                    "params": self.params.model_dump(),
                    "labels": list(self.labels),
                    "pair": self.pair,
                    "lm_fingerprint": self.states.fingerprint,
                },
                ensure_ascii=False,
                indent=1,
            )
        )


def _optimizer(head: nn.Module, params: GemmaAttentionParams) -> torch.optim.Optimizer:
    return torch.optim.AdamW(head.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)


def load(model_dir: Path) -> GemmaAttentionClassifier:
    """A saved classifier; the Gemma folder (``params.model_dir``) is read only for pairs that are
    not in the feature cache yet."""
    from synthllm.classifier import load_classifier

    info = json.loads((model_dir / META_FILE).read_text())
    params = GemmaAttentionParams(**info["params"])
    clf = GemmaAttentionClassifier(params, info["labels"], info["pair"])
    if info.get("lm_fingerprint") != clf.states.fingerprint:
        # the head was trained on another LM's states: its predictions would be noise
        raise ValueError(
            f"{model_dir} was trained on the token states of another {params.model_dir} "
            f"(fingerprint {info.get('lm_fingerprint')}, now {clf.states.fingerprint}); "
            "retrain it (dvc repro re-runs the stages that depend on the generator)"
        )
    state = torch.load(model_dir / "head.pt", weights_only=True)
    n_layers, dim = state["hypothesis_mean"].shape
    clf.head = _make_head(params, n_layers, dim, len(clf.labels), clf.pair)
    clf.head.load_state_dict(state)
    clf.head.eval()
    clf.optimizer = _optimizer(clf.head, params)
    clf.optimizer.load_state_dict(torch.load(model_dir / "optimizer.pt", weights_only=True))
    if clf.ngram is not None:
        clf.ngram = load_classifier(model_dir / "ngram")
    return clf
