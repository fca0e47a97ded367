"""Typed, validated view of ``params.yaml``.

Every section forbids unknown keys and bounds its numbers, so a typo or an impossible value fails
before any work starts, with a message that names the key and the allowed values. Stages read one
section each (``load_params(path).generate``); this package does no I/O beyond reading the YAML.

The package splits it by kind: ``base`` (the strict base class, shared constants), ``backends``,
``classifiers``, ``sections`` (the other sections) and ``root`` (``Params`` and loading). Import
from here: every public name is re-exported.
"""

from __future__ import annotations

from synthllm.params.backends import (
    BackendParams,
    OpenAIBackendParams,
    PriceParams,
    TransformersBackendParams,
    listed_price,
)
from synthllm.params.base import (
    GENERATOR_DIR,
    NLI_LABELS,
    SCRIPTS,
    SYNTHETIC_REGIMES,
    MaxUnanswered,
    Regime,
    Strict,
)
from synthllm.params.classifiers import (
    ClassifierParams,
    GemmaHeadParams,
    HFClassifierParams,
    SklearnClassifierParams,
)
from synthllm.params.root import Params, load_params, parse_params
from synthllm.params.sections import (
    LEARNED_DEFAULTS,
    LEARNED_METHODS,
    VOTE_METHODS,
    AggregateParams,
    AnnotateParams,
    AnnotatorParams,
    AnnotatorTrainingParams,
    CascadeParams,
    CurvesParams,
    FilterParams,
    GenerateParams,
    GeneratorModelParams,
    GoldParams,
    SplitParams,
    TaskParams,
    TrainParams,
)

__all__ = [
    "GENERATOR_DIR",
    "LEARNED_DEFAULTS",
    "LEARNED_METHODS",
    "NLI_LABELS",
    "SCRIPTS",
    "SYNTHETIC_REGIMES",
    "VOTE_METHODS",
    "AggregateParams",
    "AnnotateParams",
    "AnnotatorParams",
    "AnnotatorTrainingParams",
    "BackendParams",
    "CascadeParams",
    "ClassifierParams",
    "CurvesParams",
    "FilterParams",
    "GemmaHeadParams",
    "GenerateParams",
    "GeneratorModelParams",
    "GoldParams",
    "HFClassifierParams",
    "MaxUnanswered",
    "OpenAIBackendParams",
    "Params",
    "PriceParams",
    "Regime",
    "SklearnClassifierParams",
    "SplitParams",
    "Strict",
    "TaskParams",
    "TrainParams",
    "TransformersBackendParams",
    "listed_price",
    "load_params",
    "parse_params",
]
