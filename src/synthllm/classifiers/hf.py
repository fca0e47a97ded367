"""Any transformers checkpoint (ParsBERT, XLM-R, mDeBERTa…) as a sequence classifier (kind ``hf``).

Through ``AutoModelForSequenceClassification`` and the HF ``Trainer``, one ``train()`` per phase;
seeded before its classification head is built, placed on the accelerator when there is one, saving
a checkpoint each epoch when given a work folder (and resuming from it), logging to DVCLive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthllm.classifiers.base import read_meta, write_meta
from synthllm.params import HFClassifierParams


def device() -> str:
    """The accelerator every model runs on when one is there (CUDA, then Apple MPS), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"


def _last_complete_checkpoint(folder: Path) -> str | None:
    """The newest epoch checkpoint a killed run left whole; a half-written one (the kill landed while
    it was being saved: no trainer_state.json yet, which the Trainer writes last) is removed."""
    import shutil

    complete = []
    for ckpt in folder.glob("checkpoint-*"):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            complete.append(ckpt)
        except (OSError, ValueError):  # absent, or torn mid-write
            shutil.rmtree(ckpt, ignore_errors=True)
    return str(max(complete, key=lambda c: int(c.name.rsplit("-", 1)[-1]))) if complete else None


class HFClassifier:
    kind = "hf"

    def __init__(
        self,
        params: HFClassifierParams,
        model_dir: str | None = None,
        *,
        labels: Sequence[str],
        pair: bool = True,
        seed: int | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

        if seed is not None:  # before the head is built: a seed's model must not depend on what ran before
            set_seed(seed)
        source = model_dir or params.model
        self.params, self.labels, self.pair = params, tuple(labels), pair
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={lab: i for i, lab in enumerate(self.labels)},
        )
        self.model.to(device())
        self.live = None  # a dvclive.Live the Trainer logs to (set by the train stage)

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str], **kw):
        texts = (list(premises), list(hypotheses)) if self.pair else (list(hypotheses),)
        return self.tokenizer(*texts, truncation=True, max_length=self.params.max_length, **kw)

    def _dataset(self, rows: pd.DataFrame) -> list[dict]:
        """Tokenised rows as a list of feature dicts (the Trainer's DataLoader takes any sequence;
        padding is dynamic, in the collator). One fast-tokenizer call, no datasets cache files."""
        enc = self._encode(rows["premise"], rows["hypothesis"])
        labels = [self.labels.index(lab) for lab in rows["label"]]
        return [{**{k: v[i] for k, v in enc.items()}, "label": labels[i]} for i in range(len(rows))]

    def _training_args(self, out: Path, epochs: int, seed: int, checkpoints: bool):
        """The phase's ``TrainingArguments``: ``seed`` is the run's seed plus the phase number; with
        ``checkpoints`` (a work folder) one checkpoint per epoch is kept."""
        from transformers import TrainingArguments

        return TrainingArguments(
            output_dir=str(out),
            num_train_epochs=epochs,
            max_steps=self.params.max_steps_per_phase,
            per_device_train_batch_size=self.params.batch_size,
            learning_rate=self.params.learning_rate,
            weight_decay=self.params.weight_decay,
            warmup_steps=self.params.warmup_ratio,  # a float < 1 is a ratio
            seed=seed,
            data_seed=seed,
            fp16=self.params.fp16,
            bf16=self.params.bf16,
            save_strategy="epoch" if checkpoints else "no",
            save_total_limit=1 if checkpoints else None,
            report_to=[],
            logging_strategy="epoch",
            disable_tqdm=False,
        )

    def fit_phase(
        self,
        rows: pd.DataFrame,
        epochs: int,
        seed: int,
        phase: int,
        after_epoch: Callable[[int], None],
        work_dir: Path | None = None,
    ) -> dict:
        """One ``Trainer.train()``. With ``work_dir`` it saves a checkpoint each epoch there and, if
        one is already there (a killed run), resumes from the last."""
        import tempfile

        from transformers import DataCollatorWithPadding, Trainer, TrainerCallback
        from transformers.integrations import DVCLiveCallback

        class EpochEnd(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                after_epoch(round(state.epoch or 0) - 1)
                self_model.train()

        class PhaseLive(DVCLiveCallback):  # one Live over all phases: the stage ends it, not a phase
            def on_train_end(self, args, state, control, **kwargs):
                pass

        self_model = self.model
        with tempfile.TemporaryDirectory(prefix="synthllm-hf-") as tmp:
            out = Path(work_dir or tmp)
            args = self._training_args(out, epochs, seed + phase, work_dir is not None)
            epoch_end: list[TrainerCallback] = [EpochEnd()]
            callbacks = epoch_end + ([PhaseLive(live=self.live)] if self.live is not None else [])
            trainer = Trainer(
                model=self.model,
                args=args,
                train_dataset=self._dataset(rows),
                data_collator=DataCollatorWithPadding(self.tokenizer),
                callbacks=callbacks,
            )
            resume = _last_complete_checkpoint(out) if work_dir else None
            result = trainer.train(resume_from_checkpoint=resume)
        return {
            "train_loss": round(float(result.training_loss), 6),
            "resumed": resume is not None,
            "samples_per_second": result.metrics.get("train_samples_per_second"),
        }

    def snapshot(self) -> object:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, snapshot: object) -> None:
        self.model.load_state_dict(snapshot)

    def predict_proba(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(premises), 64):
                enc = self._encode(premises[i : i + 64], hypotheses[i : i + 64], padding=True, return_tensors="pt").to(
                    self.model.device
                )
                out.append(torch.softmax(self.model(**enc).logits.float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        write_meta(out_dir, self)


def load(model_dir: Path) -> HFClassifier:
    info = read_meta(model_dir)
    return HFClassifier(
        HFClassifierParams(**info["params"]),
        model_dir=str(model_dir),
        labels=info["labels"],
        pair=info["pair"],
    )
