"""Frozen Gemma token states of text pairs, computed on demand and cached on disk.

Each pair is read **once** by the lower layers of the generator LM (Gemma 3 270M) as
``<bos> premise \n hypothesis``. The LM is causal, so the hypothesis tokens' states have seen the
premise — a cross-encoding for free, which is what lifts the heads of
:mod:`synthllm.classifiers.gemma_heads` above n-gram and embedding-alignment models — while the
premise tokens' states are those of the premise alone. The states are cached on disk, keyed by a
hash of the model's files, the layers, the truncation length and the text(s); texts never seen
before (new synthetic rows) are computed on demand.

What this module deliberately does not do:

* fine-tune Gemma (one step of the 270M model takes seconds on a 2-core CPU; the states are frozen);
* keep Gemma's upper layers: only the layers up to the deepest one in ``layers`` are run;
* evict anything from the cache (about 0.6 GB for all of FarsTail at one layer), or lock it
  across processes: each writer adds its own shard, so concurrent writers can at worst store an
  entry twice, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from synthllm.io import fingerprint
from synthllm.params import GemmaHeadParams

# premise states, premise token ids, hypothesis states (given the premise), hypothesis token ids
PairStates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# mean hypothesis state (float32), hypothesis token count, premise token count
PairMean = tuple[np.ndarray, int, int]

# what a process may keep of pooled means per cache (see GemmaStateCache.means): a mean is ~2.5 KiB
# per layer, so the gold splits and a few thousand synthetic rows stay; beyond, the oldest go
MEAN_CACHE_BYTES = 512 * 2**20
# pooled means of caches with a folder, shared by every instance on the same folders (one per seed)
_SHARED_MEANS: dict[tuple, OrderedDict[tuple[str, str], PairMean]] = {}


def mean_state(states: np.ndarray) -> np.ndarray:
    """The mean of a text's token states in float32 (zeros for a text without tokens)."""
    x = np.asarray(states, np.float32)
    return x.mean(0) if len(x) else np.zeros(x.shape[1], np.float32)


def feature_dir(params: GemmaHeadParams) -> Path | None:
    """Where the token states are cached: ``feature_cache``, a relative one under
    ``$SYNTHLLM_CACHE_DIR`` when that is set (as the request cache moves with it)."""
    if params.feature_cache is None:
        return None
    path, root = Path(params.feature_cache), os.environ.get("SYNTHLLM_CACHE_DIR")
    return Path(root) / path if root and not path.is_absolute() else path


class GemmaStateCache:
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
        dtype: str = "float32",
    ):
        self.model_dir = Path(model_dir)
        self.layers, self.max_tokens, self.batch_tokens = list(layers), max_tokens, batch_tokens
        self.condition_on_premise, self.dtype = condition_on_premise, dtype
        # float32 keeps the keys of caches filled before the dtype was a choice
        tag = "" if dtype == "float32" else f"|{dtype}"
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model_dir}: no model folder (config.json); build it with "
                "the generator_model stage or set model_dir"
            )
        self.fingerprint = model = fingerprint(self.model_dir)
        self.dirs = (
            {
                layer: Path(cache_dir)
                / hashlib.sha256(f"{self.FORMAT}|{model}|{layer}|{max_tokens}{tag}".encode()).hexdigest()[:16]
                for layer in self.layers
            }
            if cache_dir
            else {}
        )
        self._mem: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {layer: {} for layer in self.layers}
        self._disk: dict[int, dict[str, tuple[str, int, int]]] = {layer: {} for layer in self.layers}
        self._shards: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._lm = None
        self._tokenizer: Any = None  # a transformers tokenizer, once loaded
        # the disk entries never change once written, so neither do the means derived from them:
        # caches on the same folders share them; one without a folder keeps its own
        identity = (self.FORMAT, model, tuple(self.layers), max_tokens, dtype, condition_on_premise)
        folders = tuple(str(self.dirs.get(layer)) for layer in self.layers)
        self._means = _SHARED_MEANS.setdefault(identity + folders, OrderedDict()) if self.dirs else OrderedDict()
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

    def means(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairMean]:
        """(:func:`mean_state` of the hypothesis states, hypothesis and premise token counts) per
        pair, in order: what a pooled head reads, memoised per pair, so gold val read every epoch
        (and each seed) is looked up and averaged once. The same arrays as :meth:`get` gives,
        averaged by the same operations: the values are those of a fresh computation."""
        pairs = list(zip(premises, hypotheses))
        missing = list(dict.fromkeys(pair for pair in pairs if pair not in self._means))
        if missing:
            # a memoised pair's states are all cached, so get computes the passes it would have
            got = self.get([p for p, _ in missing], [h for _, h in missing])
            for pair, (ps, _, hs, _) in zip(missing, got):
                self._means[pair] = (mean_state(hs), len(hs), len(ps))
            size = self._means[missing[-1]][0].nbytes
            while len(self._means) > 1 and len(self._means) * size > MEAN_CACHE_BYTES:
                self._means.popitem(last=False)
        return [self._means[pair] if pair in self._means else self._fresh_mean(*pair) for pair in pairs]

    def _fresh_mean(self, premise: str, hypothesis: str) -> PairMean:
        ps, _, hs, _ = self.get([premise], [hypothesis])[0]
        return mean_state(hs), len(hs), len(ps)

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
            lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
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
        batches: list[list[int]] = []
        cur: list[int] = []
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
