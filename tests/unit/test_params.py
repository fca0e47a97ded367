import pytest
import yaml

from synthllm.errors import ParamsError
from synthllm.params import load_params, parse_params


@pytest.fixture
def base(repo_root):
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repository_params_validate(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert list(params.annotators) == ["classifier", "gemma", "intended"]
    assert params.annotator_reads("intended") == "data/synthetic/generated.jsonl"
    assert (params.train.classifier.kind, params.train.classifier.head) == ("gemma_head", "pooled")
    assert (params.annotator_training.classifier.kind, params.annotator_training.classifier.head) == (
        "gemma_head",
        "align",
    )
    assert set(params.regimes) == {"synthetic_only", "warmup", "mix", "reversed"}


def test_misspelt_regime_names_key_and_allowed_values(base):
    base["regimes"] = ["warmpu"]
    with pytest.raises(ParamsError) as err:
        parse_params(base)
    msg = str(err.value)
    assert "regimes.0" in msg and "'warmup'" in msg and "'mix'" in msg


def test_unknown_key_is_named(base):
    base["generate"]["num_premise"] = 5
    with pytest.raises(ParamsError, match=r"generate\.num_premise: unknown key"):
        parse_params(base)


def test_wrong_type_and_impossible_value(base):
    base["generate"]["batch_size"] = 3
    base["split"]["dev_fraction"] = 1.5
    base["train"]["seeds"] = []
    with pytest.raises(ParamsError) as err:
        parse_params(base)
    msg = str(err.value)
    assert "generate.batch_size" in msg
    assert "split.dev_fraction" in msg
    assert "train.seeds" in msg


def test_active_annotator_must_be_configured(base):
    base["annotators"] = {"classifier": "models/annotators/classifier", "gtp4o": "prompts/fa/nli/annotate.yaml"}
    with pytest.raises(ParamsError, match="gtp4o"):
        parse_params(base)


def test_active_annotator_names_what_its_stage_reads(base):
    base["annotators"]["gemma"] = "models/annotators/classifier"
    with pytest.raises(ParamsError, match=r"annotators.gemma must be 'models/generator'"):
        parse_params(base)
    base["annotators"] = ["classifier", "gemma"]  # the old list form: told what to write instead
    with pytest.raises(ParamsError, match="annotators is a mapping"):
        parse_params(base)


def test_backend_kind_discriminates(base):
    base["annotator_configs"]["gemma"]["backend"] = {"kind": "openai"}  # model is required
    with pytest.raises(ParamsError, match=r"annotator_configs\.gemma\.backend\.openai\.model"):
        parse_params(base)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("generate: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(bad)


def test_branches_and_aggregates_must_name_real_label_files(base):
    base["branches"]["vote"] = "data/annotated/vote.jsonl"
    with pytest.raises(ParamsError, match=r"branches\.vote must be 'data/aggregated/vote\.jsonl'"):
        parse_params(base)
    base["branches"]["vote"] = "data/aggregated/vote.jsonl"
    base["branches"]["gtp4o"] = "data/annotated/gtp4o.jsonl"
    with pytest.raises(ParamsError, match="branches.gtp4o is neither"):
        parse_params(base)
    del base["branches"]["gtp4o"]
    base["aggregates"]["vote"]["members"] = ["classifier", "aya23"]  # configured but not active
    with pytest.raises(ParamsError, match=r"members \['aya23'\] are not active"):
        parse_params(base)


def test_paper_preset_validates(repo_root):
    paper = load_params(repo_root / "presets" / "paper.yaml")
    assert list(paper.annotators) == ["classifier", "gpt4o_mini", "aya23"]
    assert paper.annotator_configs["gpt4o_mini"].backend.use_batch_api
    assert paper.generate.backend.kind == "openai" and paper.train.classifier.kind == "hf"


def test_offline_large_preset_is_the_default_but_for_the_pool_size(repo_root):
    """The large offline preset answers "what changes with size": it may differ from params.yaml in
    generate.num_premises only (a change to the default must be made to the preset too)."""
    default = load_params(repo_root / "params.yaml").model_dump(mode="json")
    large = load_params(repo_root / "presets" / "offline_large.yaml").model_dump(mode="json")
    assert "intended" in large["annotators"] and "intended" in large["branches"]  # the $0 control
    assert large["generate"].pop("num_premises") * len(large["task"]["labels"]) >= 1500 / 0.6
    default["generate"].pop("num_premises")
    assert large == default
    from synthllm.prompts import load_annotate_prompt, load_generate_prompt

    preset = load_params(repo_root / "presets" / "sentiment_fa.yaml")
    assert preset.task.input == "single" and preset.gold.source == "local"
    assert (repo_root / preset.gold.path / "train.csv").is_file()
    load_generate_prompt(repo_root / "prompts", preset.generate.prompt, preset.generate_labels, preset.task)
    for name in preset.annotators:
        cfg = preset.annotator_configs[name]
        if cfg.kind == "llm":
            load_annotate_prompt(repo_root / "prompts", cfg.prompt, preset.task)


def test_gemma_head_must_read_the_tracked_generator_folder(base):
    base["annotator_training"]["classifier"]["model_dir"] = "models/other-lm"
    with pytest.raises(
        ParamsError, match=r"annotator_training.classifier.model_dir is 'models/other-lm'.*models/generator"
    ):
        parse_params(base)


def test_procedures_the_report_calls_equal_are_equal_or_refused(base):
    """Issue 14 (defect 9): select_synthetic_epoch was ignored by the curve stages, and HF
    max_steps_per_phase gave two-phase regimes twice the steps of one-phase ones."""
    base["train"]["select_synthetic_epoch"] = True
    with pytest.raises(ParamsError, match="curve stages train without synthetic-dev epoch selection"):
        parse_params(base)
    base["curves"].update(budgets=[], pool_budget=None)
    assert parse_params(base).train.select_synthetic_epoch  # no curves: one procedure everywhere
    base["train"]["select_synthetic_epoch"] = False
    base["train"]["classifier"] = {
        "kind": "hf",
        "model": "HooshvareLab/bert-fa-base-uncased",
        "max_steps_per_phase": 50,
    }
    with pytest.raises(ParamsError, match=r"two-phase regimes \['warmup', 'reversed'\] would get twice the steps"):
        parse_params(base)
    base["regimes"] = ["synthetic_only", "mix"]
    assert parse_params(base).train.classifier.max_steps_per_phase == 50
    base["train"]["classifier"]["max_steps_per_phase"] = -1
    base["regimes"] = ["warmup"]
    assert parse_params(base)
    base["gold"]["path"] = "data/elsewhere"  # a path with source farstail is never read: refused
    with pytest.raises(ParamsError, match="gold.path 'data/elsewhere' is read with gold.source 'local' only"):
        parse_params(base)


def test_lookups_by_name_raise_params_error_naming_the_known_names(base):
    params = parse_params(base)
    assert params.annotator("gemma") is params.annotator_configs["gemma"]
    assert params.cascade("cascade") is params.cascades["cascade"]
    with pytest.raises(ParamsError, match=r"annotator 'nope' is not in annotator_configs") as err:
        params.annotator("nope")
    assert str(sorted(params.annotator_configs)) in str(err.value)
    with pytest.raises(ParamsError, match=r"cascade 'nope' is not in params\.cascades") as err:
        params.cascade("nope")
    assert str(sorted(params.cascades)) in str(err.value)
    with pytest.raises(ParamsError, match=r"aggregate 'nope' is not in params\.aggregates") as err:
        params.aggregate("nope")
    assert str(sorted(params.aggregates)) in str(err.value)


def test_intended_annotator_needs_no_model(base):
    params = parse_params(base)
    assert params.annotator_configs["intended"].kind == "intended"
    assert params.branches["intended"] == "data/annotated/intended.jsonl"


@pytest.mark.parametrize(
    "extra",
    [
        {"model_dir": "models/annotators/classifier"},
        {"prompt": "fa/nli/annotate"},
        {"backend": {"kind": "transformers", "model_dir": "models/generator"}},
        {"stability_variant": "hypothesis_first"},
        {"shots": 3},
    ],
)
def test_intended_annotator_rejects_what_it_would_ignore(base, extra):
    base["annotator_configs"]["intended"].update(extra)
    with pytest.raises(ParamsError, match=rf"annotator_configs\.intended.*\['{next(iter(extra))}'\] would be ignored"):
        parse_params(base)


def test_intended_annotator_reads_the_pool(base):
    base["annotators"]["intended"] = "models/generator"
    with pytest.raises(ParamsError, match=r"annotators.intended must be 'data/synthetic/generated.jsonl'"):
        parse_params(base)


def test_intended_annotator_cannot_vote_or_cascade(base):
    vote = {**base, "aggregates": {"vote": {"members": ["classifier", "intended"], "method": "majority"}}}
    with pytest.raises(ParamsError, match=r"aggregates.vote.members uses \['intended'\], an intended annotator"):
        parse_params(vote)
    base["cascades"]["cascade"]["cheap"] = ["intended"]
    with pytest.raises(ParamsError, match=r"cascades.cascade uses \['intended'\]"):
        parse_params(base)


@pytest.mark.parametrize("change", [{"shots": 0}, {"kind": "classifier", "model_dir": "models/annotators/x"}])
def test_shared_shots_without_shots_are_refused(base, change):
    cfg = base["annotator_configs"]["gemma"]
    cfg["shot_selection"] = "shared"
    cfg.update(change)
    if cfg["kind"] == "classifier":
        for key in ("method", "prompt", "stability_variant", "backend"):
            cfg.pop(key)
    with pytest.raises(ParamsError, match="shot_selection 'shared'.*would be ignored"):
        parse_params(base)
