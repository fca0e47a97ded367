"""Train-stage throughput on a GPU: the project's train stage vs a plain HF ``Trainer`` script.

Both train the same transformer encoder on the same FarsTail gold rows with the same
``TrainingArguments`` (bf16, batch 32, max_length 128, dynamic padding); the number compared is
the Trainer's own ``train_samples_per_second`` (training loop only), plus each process's wall time
(imports, loading, tokenisation and saving included).

The encoder is BERT-base-shaped (12 layers, 768 wide, 110M parameters: the size of ParsBERT) with a
WordPiece vocabulary trained on FarsTail train and random initial weights, because the GPU machine
has no internet; throughput depends on the shapes, not on the weight values.

Three steps (``benchmarks/gpu_train_throughput.sh`` runs the last two on the GPU machine):

    python benchmarks/gpu_train_throughput.py prepare --gold data/gold --out .bench   # CPU, here
    python benchmarks/gpu_train_throughput.py init --bench .bench --out /tmp/encoder  # writes weights
    python benchmarks/gpu_train_throughput.py plain --model /tmp/encoder --gold data/gold --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TRAINING = {"batch_size": 32, "max_length": 128, "learning_rate": 3e-5, "weight_decay": 0.01, "warmup_ratio": 0.06}


def prepare(gold: Path, out: Path, vocab_size: int, epochs: int) -> None:
    """Tokenizer + config + a params file whose train section uses that encoder (runs on CPU)."""
    import pandas as pd
    import yaml
    from tokenizers import BertWordPieceTokenizer
    from tokenizers.processors import BertProcessing
    from transformers import BertConfig, PreTrainedTokenizerFast

    rows = pd.read_json(gold / "train.jsonl", lines=True)
    tok = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    tok.train_from_iterator(list(rows["premise"]) + list(rows["hypothesis"]), vocab_size=vocab_size)
    tok.post_processor = BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    enc_dir = out / "encoder"
    enc_dir.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(
        tokenizer_object=tok._tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=512,
    ).save_pretrained(enc_dir)
    BertConfig(vocab_size=tok.get_vocab_size(), num_labels=3).save_pretrained(enc_dir)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"] = {
        "classifier": {"kind": "hf", "model": "/tmp/encoder", "bf16": True, **TRAINING},
        "synthetic_epochs": 1,
        "gold_epochs": epochs,
        "seeds": [1],
    }
    (out / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    print(f"prepared {enc_dir} (vocab {tok.get_vocab_size()}) and {out / 'params.yaml'}")


def init(bench: Path, out: Path) -> None:
    """Random-initialised weights (seed 0) saved with the tokenizer, so both runs load the same."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(bench / "encoder"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(bench / "encoder").save_pretrained(out)
    print(f"encoder: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters -> {out}")


def plain(model_dir: Path, gold: Path, epochs: int, seed: int, bf16: bool, metrics: Path | None) -> None:
    """The plain script: tokenise, DataCollatorWithPadding, Trainer (no synthllm code)."""
    import pandas as pd
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    started = time.perf_counter()
    labels = ["entailment", "contradiction", "neutral"]
    rows = pd.read_json(gold / "train.jsonl", lines=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    enc = tokenizer(list(rows["premise"]), list(rows["hypothesis"]), truncation=True, max_length=TRAINING["max_length"])
    ds = [{**{k: v[i] for k, v in enc.items()}, "label": labels.index(rows["label"][i])} for i in range(len(rows))]
    args = TrainingArguments(
        output_dir="/tmp/plain-trainer",
        num_train_epochs=epochs,
        per_device_train_batch_size=TRAINING["batch_size"],
        learning_rate=TRAINING["learning_rate"],
        weight_decay=TRAINING["weight_decay"],
        warmup_steps=TRAINING["warmup_ratio"],
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        save_strategy="no",
        report_to=[],
        logging_strategy="epoch",
    )
    out = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.save_pretrained("/tmp/plain-model")
    result = {
        "rows": len(rows),
        "epochs": epochs,
        "train_loss": round(float(out.training_loss), 6),
        "samples_per_second": out.metrics["train_samples_per_second"],
        "wall_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(result))
    if metrics:
        metrics.write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--gold", type=Path, default=Path("data/gold"))
    p.add_argument("--out", type=Path, default=Path(".bench"))
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--epochs", type=int, default=2)
    p = sub.add_parser("init")
    p.add_argument("--bench", type=Path, default=Path(".bench"))
    p.add_argument("--out", type=Path, default=Path("/tmp/encoder"))
    p = sub.add_parser("plain")
    p.add_argument("--model", type=Path, default=Path("/tmp/encoder"))
    p.add_argument("--gold", type=Path, default=Path("data/gold"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-bf16 for a CPU dry run (set train.classifier.bf16 false too)",
    )
    p.add_argument("--metrics", type=Path)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.gold, a.out, a.vocab_size, a.epochs)
    elif a.cmd == "init":
        init(a.bench, a.out)
    else:
        plain(a.model, a.gold, a.epochs, a.seed, a.bf16, a.metrics)


if __name__ == "__main__":
    main()
