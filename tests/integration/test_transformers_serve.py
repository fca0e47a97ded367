"""OpenAIBackend (endpoint=completions) against a real ``transformers serve`` on 127.0.0.1.

The served model is built here: a byte-level BPE tokenizer trained on a few Persian sentences and a
2-layer Llama (hidden 32) whose attention and MLP outputs are zeroed, which leaves a bigram table
(embedding -> lm_head) that we set so any prompt continues with one known sentence and then EOS.
That makes the answer checkable and the finish reason ``stop`` rather than ``length``. Byte-level
BPE matters: ``stop`` strings make transformers rebuild the vocabulary by decoding each token after
the probe text "abcdef", which a WordLevel vocabulary cannot spell (HTTP 500 from the server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from synthllm.backends import Request, run_requests
from synthllm.backends.openai_http import OpenAIBackend
from synthllm.params import OpenAIBackendParams
from synthllm.prompts import load_generate_prompt

pytest.importorskip("uvicorn", reason="transformers serve needs the [serving] extra (fastapi, uvicorn)")

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [
    "متن: هوا امروز آفتابی است.",
    "جمله: باران می‌بارد.",
    "کتاب روی میز است.",
    "متن: شهر بزرگ است.",
    "جمله: دریا آرام است.",
]
ANSWER = " این یک جمله کوتاه است."


def build_tiny_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 5 + [ANSWER] * 20,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    chain = fast(ANSWER, add_special_tokens=False)["input_ids"] + [fast.eos_token_id]
    assert len(set(chain)) == len(chain) < 32, "each answer token needs its own embedding dimension"
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        emb[:, 0], head[chain[0], 0] = 1.0, 4.0  # any token outside the answer starts the answer
        for dim, (token, following) in enumerate(zip(chain, chain[1:]), start=1):
            emb[token].zero_()
            emb[token, dim], head[following, dim] = 1.0, 4.0
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    fast.save_pretrained(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_model(tmp_path):
    model_dir = tmp_path / "tiny"
    build_tiny_model(model_dir)
    cli = Path(sys.executable).with_name("transformers")
    cli = str(cli) if cli.exists() else shutil.which("transformers")
    assert cli, "the `transformers` command is not installed next to this Python"
    port, log = _free_port(), (tmp_path / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.Popen(
        [
            cli,
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "transformers serve not ready after 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield model_dir, f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_completions_through_transformers_serve(served_model, monkeypatch):
    model_dir, url = served_model
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    backend = OpenAIBackend(
        OpenAIBackendParams(
            model=str(model_dir), base_urls=[url], endpoint="completions", concurrency=2, timeout_s=60, max_retries=1
        )
    )
    prompt = load_generate_prompt(ROOT / "prompts", "fa/nli/generate", ["entailment"])
    requests = [
        Request(
            prompt=prompt.render(premise, "entailment", []),
            max_new_tokens=16,
            temperature=0.8,
            top_p=0.95,
            seed=i,
            stop=tuple(prompt.stop),
        )
        for i, premise in enumerate(CORPUS[:3])
    ]
    results, stats = run_requests(backend, requests, progress=False)
    assert [r.error for r in results] == [None] * 3
    assert all(r.text == ANSWER and r.finish_reason == "stop" for r in results)
    assert all(r.usage.prompt_tokens > 10 and r.usage.completion_tokens >= 6 for r in results)
    assert stats.sent == 3 and stats.failures == 0
