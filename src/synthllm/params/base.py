"""What every params section shares: the strict base class and the constants sections refer to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from synthllm import params_reads

NLI_LABELS = ("entailment", "contradiction", "neutral")
GENERATOR_DIR = "models/generator"  # the generator_model stage's output (dvc.yaml)
POOL_FILE = "data/synthetic/generated.jsonl"  # the generated pool every annotate stage reads
Regime = Literal["gold_only", "synthetic_only", "warmup", "mix", "reversed"]
SyntheticRegime = Literal["synthetic_only", "warmup", "mix", "reversed"]
SYNTHETIC_REGIMES: tuple[SyntheticRegime, ...] = ("synthetic_only", "warmup", "mix", "reversed")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getattribute__(self, name: str):  # noqa: ANN204  (records reads for the dvc.yaml check)
        value = super().__getattribute__(name)
        if params_reads.sections and not name.startswith("_"):
            params_reads.note(self, name, value)
        return value

    def model_dump(self, *args, **kwargs):  # noqa: ANN201
        if params_reads.sections:
            params_reads.note_whole(self)
        return super().model_dump(*args, **kwargs)


# generate's and each annotator's: how much of an outage a stage may accept (backends.runner)
MaxUnanswered = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="Share of requests that may get no answer at all (outage, quota, timeouts) before "
        "the stage fails; every answer received is cached either way, so a re-run sends only the rest. 0: any "
        "unanswered request fails the stage.",
    ),
]


SCRIPTS = ("arabic", "latin", "cyrillic", "devanagari", "bengali", "ethiopic", "greek", "hebrew", "any")
