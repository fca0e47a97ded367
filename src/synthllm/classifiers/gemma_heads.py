"""Heads over frozen Gemma token states (:mod:`synthllm.classifiers.gemma_states`): kind
``gemma_head``, its ``head`` option choosing which.

* ``align`` — a small ESIM/decomposable-attention head: project, soft-align premise and hypothesis
  tokens, compare, mean+max pool, MLP;
* ``pooled`` — no attention: an MLP on the mean hypothesis state (the fast variant).

Either is trained on the cached states with AdamW. Optionally its class probabilities are averaged
with those of the hashed n-gram model (:class:`synthllm.classifiers.ngrams.HashingSGDClassifier`),
trained on the same phases. Every member is trained by gradient steps, so a regime's phases
continue one model: the head, its optimiser state and the n-gram weights carry over from one phase
to the next; only the learning-rate schedule restarts (a linear warm-up and decay per phase).

What this module deliberately does not do:

* choose its hyper-parameters — ``benchmarks/classifier_candidates.py`` did, on FarsTail val;
* evaluate, or know anything about regimes beyond the ordered phases it is given.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from synthllm.classifiers import ngrams
from synthllm.classifiers.base import read_meta, write_meta
from synthllm.classifiers.gemma_states import GemmaStateCache, feature_dir
from synthllm.params import GemmaHeadParams

Phase = tuple[pd.DataFrame, int]  # or synthllm.regimes.Phase: anything with .rows and .epochs
# premise states, premise exact-match flags, hypothesis states, hypothesis flags (None: no premise)
Encoded = tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]
# the same, for pair tasks: every member present
PairEncoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# the head's input tensors for a batch of row indices
Inputs = Callable[[np.ndarray], tuple[torch.Tensor, ...]]


# ---------------------------------------------------------------------------------------------
# The heads


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from 16-bit random integers: ``nn.Dropout`` draws a float per
    element, and on a 2-core CPU that draw was 40 % of an align-head step (28 ms for 64 pairs' token
    states); integers are drawn ~3x faster. The drop probability is ``p`` rounded to 1/65,536."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768  # an int16 below it is dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.randint(-32768, 32768, x.shape, dtype=torch.int16) >= self.threshold
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
        self.proj = nn.Sequential(Dropout(dropout), nn.Linear(dim + int(exact_match and pair), hidden), nn.GELU())
        self.compare = nn.Sequential(Dropout(dropout), nn.Linear(4 * hidden, hidden), nn.GELU())
        width = 2 * hidden * (2 if pair else 1)
        self.out = nn.Sequential(
            Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, n_labels)
        )

    def embed(self, x: torch.Tensor, mask: torch.Tensor, match: torch.Tensor | None, side: str) -> torch.Tensor:
        mean, std = getattr(self, f"{side}_mean"), getattr(self, f"{side}_std")
        x = (x.view(*x.shape[:2], self.n_layers, self.dim) - mean) / std
        x = _mixed(x, self.mix, 2)
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

    hypothesis_mean: torch.Tensor  # buffers, registered in __init__
    hypothesis_std: torch.Tensor

    def __init__(self, n_layers: int, dim: int, hidden: int, dropout: float, n_labels: int):
        super().__init__()
        self.n_layers, self.dim = n_layers, dim
        # standardisation of the pooled vectors, set from the first phase (see AlignHead)
        self.register_buffer("hypothesis_mean", torch.zeros(n_layers, dim))
        self.register_buffer("hypothesis_std", torch.ones(n_layers, dim))
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.out = nn.Sequential(
            Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, n_labels)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = (pooled.view(-1, self.n_layers, self.dim) - self.hypothesis_mean) / self.hypothesis_std
        return self.out(_mixed(x, self.mix, 1))


def _mixed(x: torch.Tensor, mix: torch.Tensor, dim: int) -> torch.Tensor:
    """The layers along ``dim`` mixed by softmax(mix). One layer is taken as it is: its weight is
    exactly 1 and its gradient exactly 0, and the product and sum cost two passes over every token
    state (an align-head step's largest tensors)."""
    if x.shape[dim] == 1:
        return x.squeeze(dim)
    return (x * torch.softmax(mix, 0)[:, None]).sum(dim)


def _make_head(params: GemmaHeadParams, n_layers: int, dim: int, n_labels: int, pair: bool) -> nn.Module:
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
    out = np.full((len(items), longest, width), fill, dtype=np.float32)
    mask = torch.zeros((len(items), longest))
    for r, x in enumerate(items):
        if len(x):
            out[r, : len(x)] = x  # float16 states widened in the one copy
            mask[r, : len(x)] = 1
    return torch.from_numpy(out), mask


def _exact_matches(tokens: Sequence[np.ndarray], others: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per row, which of ``tokens[i]`` occur in ``others[i]`` (1.0/0.0): ``np.isin`` row by row,
    done as one ``np.isin`` over (row, token id) keys, so a batch costs one call, not one per row."""
    if not tokens:
        return []

    def keyed(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(a) for a in arrays], np.int64)
        rows = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
        ids = np.concatenate([np.asarray(a, np.int64).reshape(-1) for a in arrays])
        return rows * (1 << 32) + ids, lengths  # token ids are int32: a key per (row, id)

    keys, lengths = keyed(tokens)
    flags = np.isin(keys, keyed(others)[0]).astype(np.float32)
    return np.split(flags, np.cumsum(lengths)[:-1])


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


class GemmaHeadClassifier:
    """The :class:`synthllm.classifiers.base.PairClassifier` contract (``fit_phase`` per phase,
    ``snapshot``/``restore``, ``predict_proba``, ``save``), plus ``fit_phases`` for a whole regime.

    ``seed`` is accepted for ``build_classifier``'s signature and not needed: the head is built at
    the first ``fit_phase``, right after seeding with that phase's seed."""

    kind = "gemma_head"

    def __init__(
        self,
        params: GemmaHeadParams,
        labels: Sequence[str],
        pair: bool = True,
        seed: int | None = None,
    ):
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.states = GemmaStateCache(
            params.model_dir,
            params.layers,
            params.max_tokens,
            feature_dir(params),
            params.condition_on_premise,
            params.extract_batch_tokens,
            params.extract_dtype,
        )
        self.head: nn.Module | None = None
        self._optimizer: AdamW | None = None
        self._saved_optimizer: Path | None = None  # a loaded model's optimizer state, read on first use
        self.ngram = None
        self.live = None  # set by the train stage; nothing is logged to it here
        if params.ngram_weight > 0:
            self.ngram = ngrams.HashingSGDClassifier(params.ngram, self.labels, pair)
            self.ngram.feature_dir = feature_dir(params)  # hashed features kept beside the token states

    @property
    def optimizer(self) -> AdamW | None:
        """AdamW over the head; a loaded model's optimizer state is read when first needed (a model
        that only predicts, in evaluate or annotate, never reads it)."""
        if self._optimizer is None and self._saved_optimizer is not None and self.head is not None:
            self._optimizer = _optimizer(self.head, self.params)
            self._optimizer.load_state_dict(torch.load(self._saved_optimizer, weights_only=True))
            self._saved_optimizer = None
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: AdamW | None) -> None:
        self._optimizer = value

    # -- inputs

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[Encoded]:
        """Per row: premise states, premise exact-match flags, hypothesis states and flags."""
        if not self.pair:
            premises = [""] * len(hypotheses)
        rows = self.states.get(list(premises), list(hypotheses))
        if not self.pair:
            return [(None, None, hs, None) for _, _, hs, _ in rows]
        if self.params.head == "pooled":  # reads the mean hypothesis state only: no match flags
            return [(ps, None, hs, None) for ps, _, hs, _ in rows]
        p_tokens, h_tokens = [r[1] for r in rows], [r[3] for r in rows]
        p_flags, h_flags = _exact_matches(p_tokens, h_tokens), _exact_matches(h_tokens, p_tokens)
        return [(ps, pf, hs, hf) for (ps, _, hs, _), pf, hf in zip(rows, p_flags, h_flags)]

    def _batch(self, rows: Sequence[Encoded]) -> tuple[torch.Tensor, ...]:
        assert self.head is not None  # built before any batch
        width = len(self.params.layers) * cast(int, self.head.dim)
        h, h_mask = _pad([r[2] for r in rows], width)
        if not self.pair:
            return h[:, :0], h_mask[:, :0], h_mask[:, :0], h, h_mask, h_mask
        pair_rows = cast(Sequence[PairEncoded], rows)
        p, p_mask = _pad([r[0] for r in pair_rows], width)
        p_match, _ = _pad([r[1][:, None] for r in pair_rows], 1)
        h_match, _ = _pad([r[3][:, None] for r in pair_rows], 1)
        return p, p_mask, p_match.squeeze(-1), h, h_mask, h_match.squeeze(-1)

    def _prepare(
        self, premises: Sequence[str], hypotheses: Sequence[str]
    ) -> tuple[Inputs, np.ndarray, Callable[[], dict[str, list[np.ndarray]]]]:
        """The head's inputs for batches of these rows, each row's token count (premise and
        hypothesis) and, on demand, the states each side's standardisation is set from. The
        pooled head reads the means memoised by the state cache, not the token states."""
        if self.params.head == "pooled":
            means = self.states.means(list(premises) if self.pair else [""] * len(hypotheses), list(hypotheses))
            pooled = torch.from_numpy(np.stack([m for m, _, _ in means]))
            lengths = np.array([nh + (n_p if self.pair else 0) for _, nh, n_p in means], np.float64)
            return lambda idx: (pooled[idx],), lengths, lambda: {"hypothesis": [pooled.numpy()]}
        encoded = self._encode(premises, hypotheses)
        lengths = np.array([len(r[2]) + (len(cast(np.ndarray, r[0])) if self.pair else 0) for r in encoded], np.float64)

        def sides() -> dict[str, list[np.ndarray]]:
            # premise and hypothesis states come from different positions and contexts, so each side
            # gets its own standardisation; a premise counts once however many hypotheses it has
            out = {"hypothesis": [r[2] for r in encoded]}
            if self.pair:
                out["premise"] = list({p: cast(np.ndarray, r[0]) for p, r in zip(premises, encoded)}.values())
            return out

        return lambda idx: self._batch([encoded[i] for i in idx]), lengths, sides

    def _build(self, sides: dict[str, list[np.ndarray]]) -> None:
        n_layers = len(self.params.layers)
        dim = sides["hypothesis"][0].shape[1] // n_layers
        self.head = _make_head(self.params, n_layers, dim, len(self.labels), self.pair)
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
        phase: Any  # a Phase tuple or anything with .rows and .epochs
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
        if len(rows) == 0:
            raise ValueError(f"phase {phase} has no rows")
        rows = rows.reset_index(drop=True)
        inputs, lengths, sides = self._prepare(list(rows["premise"]), list(rows["hypothesis"]))
        if self.head is None:
            # built here rather than in __init__: its input width and standardisation come from
            # the first rows it is given; seeded first, so a seed always builds the same head
            torch.manual_seed(seed)
            self._build(sides())
        assert self.head is not None  # built just above if it was not already
        phase_seed = int(np.random.SeedSequence([seed, phase]).generate_state(1)[0])
        random.seed(phase_seed)
        torch.manual_seed(phase_seed)
        rng = np.random.default_rng([seed, phase])
        start = _weights_digest(self.head)
        with _threads(self.params.threads):
            steps, loss = self._train(rows, inputs, lengths, epochs, seed, phase, rng, after_epoch)
        return {
            "steps": steps,
            "train_loss": round(loss, 6),
            "weights_start": start,
            "weights_end": _weights_digest(self.head),
        }

    def _train(
        self,
        rows: pd.DataFrame,
        inputs: Inputs,
        lengths: np.ndarray,
        epochs: int,
        seed: int,
        phase: int,
        rng: np.random.Generator,
        after_epoch: Callable[[int], None],
    ) -> tuple[int, float]:
        assert self.head is not None and self.optimizer is not None  # set by _build or load
        y = torch.tensor([self.labels.index(lab) for lab in rows["label"]])
        bs = self.params.batch_size
        steps_per_epoch = (len(rows) + bs - 1) // bs
        total = max(epochs, round(self.params.epoch_scale * epochs * steps_per_epoch))
        warm = max(1, int(self.params.warmup_fraction * total))
        # each phase restarts its schedule from the peak: a linear warm-up, then a linear decay
        base = self.params.learning_rate

        def schedule(s: int) -> float:
            return base * (min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / total))

        step = 0

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
                    self.optimizer.lr = schedule(step)
                    self.optimizer.step()
                    step += 1
                    losses.append(loss.item())
                    bar.update(1)
                after_epoch(epoch)
        return total, float(np.mean(losses[-steps_per_epoch:]))

    def snapshot(self) -> object:
        return copy.deepcopy(
            {
                "head": cast(nn.Module, self.head).state_dict(),
                "optimizer": cast(AdamW, self.optimizer).state_dict(),
                "ngram": self.ngram.snapshot() if self.ngram is not None else None,
            }
        )

    def restore(self, snapshot: object) -> None:
        state = cast(dict[str, Any], copy.deepcopy(snapshot))
        cast(nn.Module, self.head).load_state_dict(state["head"])
        cast(AdamW, self.optimizer).load_state_dict(state["optimizer"])
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
                inputs = self._prepare(premises[i : i + 256], hypotheses[i : i + 256])[0]
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
        torch.save(cast(nn.Module, self.head).state_dict(), out_dir / "head.pt")
        torch.save(cast(AdamW, self.optimizer).state_dict(), out_dir / "optimizer.pt")
        if self.ngram is not None:
            self.ngram.save(out_dir / "ngram")
        write_meta(out_dir, self, lm_fingerprint=self.states.fingerprint)


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's thread count for the head's steps only (``threads``): a pooled head's steps are too small
    to gain from a second thread (1.7x faster on one), while the Gemma passes that compute missing
    states, and the align head's larger matmuls, keep torch's default."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class AdamW:
    """torch.optim.AdamW's update, operation for operation as its single-tensor path runs on the CPU
    (tests/unit/test_gemma_heads.py: bit for bit equal over a schedule of steps), without
    torch.optim: the first torch optimizer a process builds imports torch._dynamo (1.4 s), and every
    train, curve and annotator-training stage built one. A parameter without a gradient is skipped,
    as there; ``lr`` is set before each step by the caller's schedule."""

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            state["step"] += 1
            p.mul_(1 - self.lr * self.weight_decay)
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            n = state["step"].item()
            step_size = self.lr / (1 - beta1**n)
            denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**n) ** 0.5).add_(self.eps)
            p.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "state": {i: {k: v.clone() for k, v in s.items()} for i, s in self.state.items()}}

    def load_state_dict(self, saved: dict) -> None:
        self.lr = saved["lr"]
        self.state = {int(i): {k: v.clone() for k, v in s.items()} for i, s in saved["state"].items()}


def _optimizer(head: nn.Module, params: GemmaHeadParams) -> AdamW:
    return AdamW(head.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)


def load(model_dir: Path) -> GemmaHeadClassifier:
    """A saved classifier; the Gemma folder (``params.model_dir``) is read only for pairs that are
    not in the feature cache yet."""
    info = read_meta(model_dir)
    params = GemmaHeadParams(**info["params"])
    clf = GemmaHeadClassifier(params, info["labels"], info["pair"])
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
    clf._saved_optimizer = model_dir / "optimizer.pt"
    if clf.ngram is not None:
        clf.ngram = ngrams.load(model_dir / "ngram")
        clf.ngram.feature_dir = feature_dir(params)
    return clf
