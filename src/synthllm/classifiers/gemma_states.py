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
from synthllm.lm_passes import Prefixes, Segment, fuse_rms_norms, packed_passes, use_packed_attention
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
# each layer folder's index (entry key -> shard, span) and the shard index files already read into
# it, shared by every instance on the folder: a curve stage builds ~50 classifiers, and re-reading
# every index file for each took ~40 ms
# an entry: its shard, its token span in the shard, and its row in the shard's means
Entry = tuple[str, int, int, int]
_SHARED_INDEX: dict[Path, tuple[set[str], dict[str, Entry]]] = {}


def _disk_index(folder: Path) -> dict[str, Entry]:
    """The folder's entries, with any shard written since (by another process) read in."""
    seen, entries = _SHARED_INDEX.setdefault(folder, (set(), {}))
    for index in sorted(folder.glob("*.index.json")) if folder.is_dir() else []:
        if index.name not in seen:
            shard = index.name.removesuffix(".index.json")
            for row, (key, (a, b)) in enumerate(json.loads(index.read_text()).items()):
                entries[key] = (shard, a, b, row)
            seen.add(index.name)
    return entries


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
        self._disk: dict[int, dict[str, Entry]] = {
            layer: _disk_index(self.dirs[layer]) if layer in self.dirs else {} for layer in self.layers
        }
        self._shards: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._means_shards: dict[tuple[int, str], np.ndarray | None] = {}
        self._lm = None
        self._tokenizer: Any = None  # a transformers tokenizer, once loaded
        # the disk entries never change once written, so neither do the means derived from them:
        # caches on the same folders share them; one without a folder keeps its own
        identity = (self.FORMAT, model, tuple(self.layers), max_tokens, dtype, condition_on_premise)
        folders = tuple(str(self.dirs.get(layer)) for layer in self.layers)
        self._means = _SHARED_MEANS.setdefault(identity + folders, OrderedDict()) if self.dirs else OrderedDict()

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
        stored = [(pair, self._stored_mean(*pair)) for pair in missing]
        self._means.update((pair, mean) for pair, mean in stored if mean is not None)
        missing = [pair for pair, mean in stored if mean is None]
        if missing:
            # a memoised pair's states are all cached, so get computes the passes it would have
            got = self.get([p for p, _ in missing], [h for _, h in missing])
            for pair, (ps, _, hs, _) in zip(missing, got):
                self._means[pair] = (mean_state(hs), len(hs), len(ps))
            size = self._means[missing[-1]][0].nbytes
            while len(self._means) > 1 and len(self._means) * size > MEAN_CACHE_BYTES:
                self._means.popitem(last=False)
        return [self._means[pair] if pair in self._means else self._fresh_mean(*pair) for pair in pairs]

    def _stored_mean(self, premise: str, hypothesis: str) -> PairMean | None:
        """A pair's mean as its shard stored it (written with the states, by :func:`mean_state`):
        no token state is read. None when some layer's entry is not on disk or its shard predates
        stored means."""
        context = premise if self.condition_on_premise else ""
        h_key, p_key = self.hypothesis_key(context, hypothesis), self.premise_key(premise)
        parts, counts = [], (0, 0)
        for layer in self.layers:
            h, p = self._disk[layer].get(h_key), self._disk[layer].get(p_key)
            if h is None or p is None:
                return None
            means = self._shard_means(layer, h[0])
            if means is None:
                return None
            parts.append(means[h[3]])
            counts = (h[2] - h[1], p[2] - p[1])
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), counts[0], counts[1]

    def _shard_means(self, layer: int, shard: str) -> np.ndarray | None:
        key = (layer, f"{shard}.means")
        if key not in self._means_shards:
            path = self.dirs[layer] / f"{shard}.means.npy"
            self._means_shards[key] = np.load(path, mmap_mode="r") if path.is_file() else None
        return self._means_shards[key]

    def _fresh_mean(self, premise: str, hypothesis: str) -> PairMean:
        ps, _, hs, _ = self.get([premise], [hypothesis])[0]
        return mean_state(hs), len(hs), len(ps)

    def _lookup(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for layer in self.layers:
            if key in self._mem[layer]:
                parts.append(self._mem[layer][key])
                continue
            shard, a, b, _ = self._disk[layer][key]
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

    def _passes(self, lm, segments, prefixes, pad, record: bool = False):
        n = sum(len(s.tokens) for s in segments)
        passes = packed_passes(
            lm, segments, prefixes, pad, record=record, chunk=self.batch_tokens, output_hidden_states=True
        )
        return tqdm(passes, desc="gemma pair states", unit="pass", mininterval=10, disable=n < 4 * self.batch_tokens)

    def _normalised(self, hidden_states) -> list[np.ndarray]:
        """Each used layer's states of a pass, RMS-normalised per token (as the next layer's input norm
        does: a few of Gemma's dimensions are ~100x the rest, and float16 must hold them)."""
        out = []
        for layer in self.layers:
            h = hidden_states[layer][0].float()
            out.append((h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).numpy().astype(np.float16))
        return out

    @staticmethod
    def _width(lm) -> int:
        return int(lm.config.hidden_size)

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
            fuse_rms_norms(body)
            use_packed_attention(body)
            self._lm = body.eval()
        return self._lm, self._tokenizer

    def _token_ids(self, texts: list[str]) -> dict[str, list[int]]:
        """Each text's token ids, tokenised alone (so a text's tokens are the same whatever it is
        paired with), truncated to ``max_tokens``."""
        texts = list(dict.fromkeys(t for t in texts if t))
        if not texts:
            return {}
        tok = self._tokenizer
        return dict(
            zip(texts, tok(texts, add_special_tokens=False, truncation=True, max_length=self.max_tokens)["input_ids"])
        )

    def _compute(self, pairs: list[tuple[str, str]]) -> None:
        """Each premise is read once, as ``<bos> premise \n``, and kept as a prefix whose keys and values
        every hypothesis of that premise continues (:mod:`synthllm.backends.local_engine`'s packed
        passes): the same states as one pass over the pair, at about half the tokens (FarsTail has
        ~3 hypotheses per premise)."""
        lm, tokenizer = self._load_lm()
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        drop = len(bos)  # BOS: an attention sink, no content
        sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
        ids = self._token_ids([t for pair in pairs for t in pair])
        premises = list(dict.fromkeys(p for p, _ in pairs if p))
        pad = tokenizer.pad_token_id or 0
        new: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {layer: {} for layer in self.layers}

        def keep(hidden, key: str, start: int, tokens: list[int]) -> None:
            for layer, h in zip(self.layers, hidden):
                new[layer].setdefault(key, (h[start : start + len(tokens)], np.asarray(tokens, np.int32)))

        prefixes = Prefixes()
        segments = [Segment(bos + ids[p] + sep) for p in premises]
        with torch.inference_mode():
            for chunk, where, out in self._passes(lm, segments, prefixes, pad, record=True):
                hidden = self._normalised(out.hidden_states)
                for k, (a, _) in zip(chunk, where):
                    keep(hidden, self.premise_key(premises[k]), a + drop, ids[premises[k]])
            index = {p: k for k, p in enumerate(premises)}
            todo = [(p, h) for p, h in pairs if h]
            segments = [Segment(ids[h], index[p]) if p else Segment(bos + ids[h]) for p, h in todo]
            for chunk, where, out in self._passes(lm, segments, prefixes, pad):
                hidden = self._normalised(out.hidden_states)
                for k, (a, _) in zip(chunk, where):
                    p, h = todo[k]
                    keep(hidden, self.hypothesis_key(p, h), a + (0 if p else drop), ids[h])
        empty = (np.zeros((0, self._width(lm)), np.float16), np.zeros(0, np.int32))
        for p, h in pairs:  # texts without tokens: empty states
            for layer in self.layers:
                new[layer].setdefault(self.premise_key(p), empty)
                new[layer].setdefault(self.hypothesis_key(p, h), empty)
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
            # each entry's mean state, what a pooled head reads (the same mean_state of the same
            # float16 states as from the states themselves): a stage that trains or evaluates one
            # reads these, not the token states
            ("means", np.stack([mean_state(s) for s, _ in items])),
        ):
            tmp = folder / f".{shard}.{name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, folder / f"{shard}.{name}.npy")
        index = {k: [int(bounds[i]), int(bounds[i + 1])] for i, k in enumerate(entries)}
        tmp = folder / f".{shard}.index.tmp"
        tmp.write_text(json.dumps(index))
        os.replace(tmp, folder / f"{shard}.index.json")
        _SHARED_INDEX.setdefault(folder, (set(), self._disk[layer]))[0].add(f"{shard}.index.json")
        for row, (k, (a, b)) in enumerate(index.items()):
            self._disk[layer][k] = (shard, a, b, row)
            self._mem[layer].pop(k, None)
