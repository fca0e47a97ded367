"""Tiny real models for tests: a causal LM and a sequence classifier, built and trained in seconds.

The causal LM is trained for a few steps on FarsTail-formatted lines, so it really learns to write
short Persian lines ending in a newline (which is what the generate stage's stop rule needs).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch


def _tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(split=True)
    tok.decoder = decoders.Metaspace()
    special = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.add_tokens(["\n"])  # a plain token, so decoding keeps it and stop rules can see it
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def lines_from_farstail(mirror: Path, n: int = 300) -> list[str]:
    df = pd.read_csv(mirror / "Train-word.csv", sep="\t", dtype=str, keep_default_na=False).head(n)
    return [f"متن: {p}\nجمله: {h}\n" for p, h in zip(df.premise, df.hypothesis)]


def build_tiny_lm(out: Path, mirror: Path, steps: int = 60) -> Path:
    """A 2-layer Llama-architecture LM (~0.3M parameters) trained briefly on FarsTail lines."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    texts = lines_from_farstail(mirror)
    tokenizer = _tokenizer(texts, vocab_size=600)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = texts[(step * 16) % len(texts) : (step * 16) % len(texts) + 16]
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=96)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_encoder(out: Path, mirror: Path) -> Path:
    """A randomly initialised 2-layer BERT with a BPE vocabulary: stands in for ParsBERT/XLM-R."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _tokenizer(lines_from_farstail(mirror, 200), vocab_size=500)
    tokenizer.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]"})
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=3,
    )
    out.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
