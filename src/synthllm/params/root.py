"""The whole of ``params.yaml`` (``Params``), its cross-section checks, and loading it."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from synthllm.errors import ParamsError
from synthllm.params.backends import TransformersBackendParams
from synthllm.params.base import GENERATOR_DIR, NLI_LABELS, POOL_FILE, SYNTHETIC_REGIMES, Strict, SyntheticRegime
from synthllm.params.classifiers import GemmaHeadParams, HFClassifierParams
from synthllm.params.sections import (
    LEARNED_METHODS,
    AggregateParams,
    AnnotateParams,
    AnnotatorParams,
    AnnotatorTrainingParams,
    CascadeParams,
    CurvesParams,
    GenerateParams,
    GeneratorModelParams,
    GoldParams,
    SplitParams,
    TaskParams,
    TrainParams,
)


class Params(Strict):
    task: TaskParams = TaskParams()
    gold: GoldParams = GoldParams()
    generator_model: GeneratorModelParams = GeneratorModelParams()
    generate: GenerateParams = GenerateParams()
    annotators: dict[str, str] = Field(
        ...,
        min_length=1,
        description="Active annotators -> the one input their annotate stage reads "
        "besides the pool, gold and prompts (its DVC dependency, so that retraining one annotator's "
        "model re-runs no other): a classifier's or local model's folder, an HTTP annotator's "
        "prompt file. Checked against annotator_configs.",
    )
    annotator_configs: dict[str, AnnotatorParams]
    aggregates: dict[str, AggregateParams] = Field(
        default_factory=dict, description="Derived annotators (votes over active annotators)."
    )
    cascades: dict[str, CascadeParams] = Field(
        default_factory=dict, description="Derived annotators: cheap labels, doubtful rows escalated."
    )
    branches: dict[str, str] = Field(
        ..., min_length=1, description="Labelled pools that are split, trained on and evaluated: name -> label file."
    )
    annotate: AnnotateParams = AnnotateParams()
    annotator_training: AnnotatorTrainingParams = AnnotatorTrainingParams()
    split: SplitParams = SplitParams()
    regimes: list[SyntheticRegime] = list(SYNTHETIC_REGIMES)
    train: TrainParams = TrainParams()
    curves: CurvesParams = CurvesParams()
    cache_dir: str = Field(".cache/synthllm", description="LLM request cache (outside DVC outputs).")

    @property
    def generate_labels(self) -> list[str]:
        return list(self.generate.labels or self.task.labels)

    def annotator_reads(self, name: str) -> str:
        """What the annotate stage of ``name`` reads besides pool, gold and prompts."""
        cfg = self.annotator_configs[name]
        if cfg.kind == "intended":  # no input of its own: the pool, which the stage reads anyway
            return POOL_FILE
        if cfg.kind == "classifier":
            return str(cfg.model_dir)
        if isinstance(cfg.backend, TransformersBackendParams):
            return cfg.backend.model_dir
        return f"prompts/{cfg.prompt}.yaml"

    def annotator(self, name: str) -> AnnotatorParams:
        """``annotator_configs[name]``; a ParamsError naming the known annotators if there is none."""
        if name not in self.annotator_configs:
            raise ParamsError(
                f"annotator {name!r} is not in annotator_configs (known: {sorted(self.annotator_configs)})"
            )
        return self.annotator_configs[name]

    def cascade(self, name: str) -> CascadeParams:
        """``cascades[name]``; a ParamsError naming the known cascades if there is none."""
        if name not in self.cascades:
            raise ParamsError(f"cascade {name!r} is not in params.cascades (known: {sorted(self.cascades)})")
        return self.cascades[name]

    def aggregate(self, name: str) -> AggregateParams:
        """``aggregates[name]``; a ParamsError naming the known aggregates if there is none."""
        if name not in self.aggregates:
            raise ParamsError(f"aggregate {name!r} is not in params.aggregates (known: {sorted(self.aggregates)})")
        return self.aggregates[name]

    @model_validator(mode="after")
    def _sections_agree(self) -> Params:
        """The checks across sections, in this order: the first that fails is the error."""
        for check in (
            self._curve_budgets_hold_the_shots,
            self._generate_labels_in_task,
            self._single_text_has_no_variant,
            self._farstail_is_nli,
            self._annotators_configured,
            self._annotators_read_their_input,
            self._aggregates_vote_active_annotators,
            self._cascades_consistent,
            self._intended_not_derived_from,
            self._branches_name_their_file,
        ):
            check()
        return self

    def _curve_budgets_hold_the_shots(self) -> None:
        small = [
            b for b in self.curves.budgets + [self.curves.pool_budget or self.gold.shot_pool] if b < self.gold.shot_pool
        ]
        if small:
            raise ValueError(
                f"curves budgets {small} are below gold.shot_pool {self.gold.shot_pool}: their few-shot "
                f"examples would use labels outside the budget"
            )

    def _generate_labels_in_task(self) -> None:
        off_task = [lab for lab in self.generate.labels or [] if lab not in self.task.labels]
        if off_task:
            raise ValueError(f"generate.labels {off_task} are not in task.labels {self.task.labels}")

    def _single_text_has_no_variant(self) -> None:
        if self.task.input != "single":
            return
        variants = {
            n: c.stability_variant
            for n, c in self.annotator_configs.items()
            if c.stability_variant and n in self.annotators
        }
        if variants:
            raise ValueError(
                f"stability_variant {variants} swaps premise and hypothesis, which a "
                f"single-text task does not have; remove it"
            )
        if self.split.require_stable:
            raise ValueError("split.require_stable needs a stability_variant, which a single-text task does not have")

    def _farstail_is_nli(self) -> None:
        if self.gold.source == "farstail" and (self.task.labels != list(NLI_LABELS) or self.task.input != "pair"):
            raise ValueError(
                "gold.source 'farstail' is Persian NLI: task.input must be 'pair' and "
                f"task.labels {list(NLI_LABELS)}; for another task use gold.source 'local'"
            )

    def _annotators_configured(self) -> None:
        unknown = [a for a in self.annotators if a not in self.annotator_configs]
        if unknown:
            raise ValueError(
                f"annotators lists {unknown}, which have no entry in annotator_configs "
                f"(known: {sorted(self.annotator_configs)})"
            )

    def _annotators_read_their_input(self) -> None:
        for name, reads in self.annotators.items():
            if reads != self.annotator_reads(name):
                raise ValueError(
                    f"annotators.{name} must be {self.annotator_reads(name)!r} (what its annotate "
                    f"stage reads, per annotator_configs.{name}), not {reads!r}"
                )

    def _aggregates_vote_active_annotators(self) -> None:
        for name, agg in self.aggregates.items():
            if name in self.annotator_configs:
                raise ValueError(f"aggregates.{name} clashes with an annotator of that name")
            off = [m for m in agg.members if m not in self.annotators]
            if off:
                raise ValueError(
                    f"aggregates.{name}.members {off} are not active annotators (annotators: {list(self.annotators)})"
                )

    def _cascades_consistent(self) -> None:
        for name, c in self.cascades.items():
            if name in self.annotator_configs or name in self.aggregates:
                raise ValueError(f"cascades.{name} clashes with an annotator or aggregate of that name")
            off = [m for m in c.cheap if m not in self.annotators]
            if off:
                raise ValueError(f"cascades.{name}.cheap {off} are not active annotators ({list(self.annotators)})")
            if c.expensive not in self.annotator_configs:
                raise ValueError(f"cascades.{name}.expensive {c.expensive!r} is not in annotator_configs")
            if c.expensive_reads != self.annotator_reads(c.expensive):
                raise ValueError(f"cascades.{name}.expensive_reads must be {self.annotator_reads(c.expensive)!r}")
            if c.on_flip and not self.annotator_configs[c.cheap[0]].stability_variant:
                raise ValueError(
                    f"cascades.{name}.on_flip needs a stability_variant on {c.cheap[0]!r}; set on_flip: false"
                )

    def _intended_not_derived_from(self) -> None:
        """Votes and cascades weigh or frontier their members on the gold audit, which an intended
        annotator cannot label (gold val has no intended label)."""
        intended = {n for n, c in self.annotator_configs.items() if c.kind == "intended"}
        uses = {f"aggregates.{n}.members": a.members for n, a in self.aggregates.items()}
        uses |= {f"cascades.{n}": [*c.cheap, c.expensive] for n, c in self.cascades.items()}
        for key, members in uses.items():
            bad = sorted(intended & set(members))
            if bad:
                raise ValueError(
                    f"{key} uses {bad}, an intended annotator: it has no gold-audit labels to vote, weigh or "
                    f"escalate with; remove it there (it still trains and is evaluated as its own branch)"
                )

    def _branches_name_their_file(self) -> None:
        for name, path in self.branches.items():
            expected = (
                f"data/annotated/{name}.jsonl"
                if name in self.annotators
                else f"data/aggregated/{name}.jsonl"
                if name in self.aggregates
                else f"data/cascade/{name}.jsonl"
                if name in self.cascades
                else None
            )
            if expected is None:
                raise ValueError(
                    f"branches.{name} is neither an active annotator, an aggregate nor a cascade "
                    f"(annotators: {list(self.annotators)}, aggregates: {sorted(self.aggregates)}, "
                    f"cascades: {sorted(self.cascades)})"
                )
            if path != expected:
                raise ValueError(f"branches.{name} must be {expected!r} (the file its stage writes), not {path!r}")

    @model_validator(mode="after")
    def _one_procedure_per_report(self) -> Params:
        """Refuse combinations under which runs the report compares would be trained differently."""
        curves = bool(self.curves.budgets) or self.curves.pool_budget is not None
        if self.train.select_synthetic_epoch and curves:
            raise ValueError(
                "train.select_synthetic_epoch: the curve stages train without synthetic-dev epoch "
                "selection, so a learning curve's last point (this run) would use another procedure "
                "than its others; set select_synthetic_epoch: false, or curves.budgets: [] and "
                "curves.pool_budget: null"
            )
        clf = self.train.classifier
        two_phase = [r for r in self.regimes if r in ("warmup", "reversed")]
        if isinstance(clf, HFClassifierParams) and clf.max_steps_per_phase > 0 and two_phase:
            raise ValueError(
                f"train.classifier.max_steps_per_phase {clf.max_steps_per_phase} caps each phase: the "
                f"two-phase regimes {two_phase} would get twice the steps of gold_only and mix while the "
                f"report prints equal passes; use -1 (full epochs) or lower the epochs instead"
            )
        return self

    @model_validator(mode="after")
    def _aggregates_learnable(self) -> Params:
        for name, agg in self.aggregates.items():
            need = agg.min_audit(len(self.task.labels))
            if agg.method in LEARNED_METHODS and self.annotate.audit_size < need:
                raise ValueError(
                    f"aggregates.{name}.method {agg.method!r} learns member reliabilities from the "
                    f"audit sample: with {len(self.task.labels)} labels and {agg.folds} folds it needs "
                    f"annotate.audit_size >= {need} (it is {self.annotate.audit_size}); raise "
                    f"audit_size, lower folds, or use method majority or confidence"
                )
        return self

    @model_validator(mode="after")
    def _feature_models_tracked(self) -> Params:
        # dvc.yaml lists the generator_model stage's output as a dependency of every stage that
        # trains or runs a classifier; states of any other folder would be an untracked input
        for key, clf in (
            ("train.classifier", self.train.classifier),
            ("annotator_training.classifier", self.annotator_training.classifier),
        ):
            if isinstance(clf, GemmaHeadParams) and Path(clf.model_dir) != Path(GENERATOR_DIR):
                raise ValueError(
                    f"{key}.model_dir is {clf.model_dir!r}: a gemma_head classifier reads "
                    f"the generator_model stage's output, {GENERATOR_DIR!r} (the folder dvc.yaml "
                    f"tracks); change generator_model to use another LM"
                )
        return self


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml in the repository)"
        lines.append(f"  - {key or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_params(data: object, source: str = "params") -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if isinstance(data.get("annotators"), list):
        raise ParamsError(
            f"{source}: annotators is a mapping from each active annotator to what its annotate "
            f"stage reads, e.g. {{classifier: models/annotators/classifier, gemma: "
            f"models/generator}} (a validation error names the expected path)"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the repository root, or pass --params)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
