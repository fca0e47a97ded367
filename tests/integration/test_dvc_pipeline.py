"""The whole DAG at tiny scale with the real ``dvc`` CLI in a temporary copy of the repository.

One ``dvc repro`` (about a minute and a half on 2 cores) is shared by the tests in this module:
outputs are complete, a second repro runs nothing, and a params change makes exactly the stages
that read it (and their descendants) stale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from edit_params import load_params, write_params

pytestmark = pytest.mark.slow

PLANTED_KEY = "sk-test-PLANTED-dvc-41b7c9e2d0"
COPY_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    ".dvc",
    "data",
    "models",
    "metrics",
    "plots",
    "reports",
    ".cache",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    "notebooks",
    "benchmarks",
    "tests",
)


def tiny_params(repo_root: Path, tiny_lm: Path) -> dict:
    params = load_params(repo_root / "params.yaml")
    params["gold"]["max_train"] = 400
    params["generator_model"] = {"source": "hf", "name_or_path": str(tiny_lm), "save_dtype": "float32"}
    params["generate"].update(
        num_premises=14,
        shots=1,
        max_new_tokens=32,
        backend={"kind": "transformers", "model_dir": "models/generator", "batch_size": 8},
    )
    params["generate"]["filters"].update(min_script_ratio=0.5, min_words=2)
    params["annotators"] = {"classifier": "models/annotators/classifier", "tinylm": "models/generator"}
    params["annotator_configs"]["tinylm"] = {
        "kind": "llm",
        "method": "logprob",
        "prompt": "fa/nli/annotate",
        "shots": 1,
        "stability_variant": "hypothesis_first",
        "backend": {"kind": "transformers", "model_dir": "models/generator", "batch_size": 8},
    }
    params["aggregates"] = {"vote": {"members": ["classifier", "tinylm"], "method": "dawid_skene"}}
    params["branches"] = {
        "classifier": "data/annotated/classifier.jsonl",
        "tinylm": "data/annotated/tinylm.jsonl",
        "vote": "data/aggregated/vote.jsonl",
    }
    params["annotate"]["audit_size"] = 20
    # the default's kind, on the tiny LM: the classifier annotator reads models/generator's states
    params["annotator_training"] = {
        "gold_epochs": 1,
        "seed": 0,
        "classifier": {"kind": "gemma_head", "layers": [1], "hidden": 16, "max_tokens": 48, "batch_size": 32},
    }
    params["split"]["dev_fraction"] = 0.2
    params["regimes"] = ["warmup", "mix"]
    params["curves"] = {"budgets": [100, 200], "pool_budget": 100, "pool_fractions": [0.5, 1.0]}
    params["train"] = {
        "classifier": {"kind": "sklearn_sgd", "n_features": 4096},
        "gold_epochs": 1,
        "synthetic_epochs": 1,
        "seeds": [1, 2],
        "launcher": "python -m",
    }
    return params


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def dvc(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, env, check)


def with_git_identity(env: dict) -> dict:
    return {
        **env,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


def make_repo(repo_root: Path, dest: Path, params: dict) -> Path:
    shutil.copytree(repo_root, dest, ignore=COPY_IGNORE)
    write_params(dest / "params.yaml", params, sort_keys=False)
    env = with_git_identity(dict(os.environ))
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny"],
    ):
        run(cmd, dest, env)
    return dest


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory, farstail_mirror):
    cache = tmp_path_factory.mktemp("llm-cache")
    # a planted key in the environment must end up nowhere (dvc.lock, outputs, metrics, cache);
    # every stage records which params it reads (synthllm.params_reads) for the dvc.yaml check
    return {
        **os.environ,
        "SYNTHLLM_FARSTAIL_MIRROR": str(farstail_mirror),
        "SYNTHLLM_CACHE_DIR": str(cache),
        "TQDM_DISABLE": "1",
        "OPENAI_API_KEY": PLANTED_KEY,
        "SYNTHLLM_PARAMS_LOG": str(tmp_path_factory.mktemp("params-reads")),
    }


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, repo_root, tiny_lm, pipeline_env):
    repo = make_repo(repo_root, tmp_path_factory.mktemp("w") / "repo", tiny_params(repo_root, tiny_lm))
    dvc("repro", cwd=repo, env=pipeline_env)
    return repo


def stage_name(address: str) -> str:
    """A stage's name without its pipeline file (DVC writes ``pipelines/train/dvc.yaml:train@x``)."""
    return address.rsplit(":", 1)[-1]


def changed_stages(repo: Path, env: dict) -> set[str]:
    return {stage_name(s) for s in json.loads(dvc("status", "--json", cwd=repo, env=env).stdout)}


def stale_stages(repo: Path, env: dict) -> tuple[set[str], set[str]]:
    """Stages ``dvc status`` reports as changed, and those plus every stage downstream of them
    (which ``dvc repro`` would then re-run, as their inputs change)."""
    changed = changed_stages(repo, env)
    edges: dict[str, set[str]] = {}
    for line in dvc("dag", "--dot", cwd=repo, env=env).stdout.splitlines():
        if "->" in line:
            a, b = (stage_name(x.strip(' ";')) for x in line.split("->"))
            # dvc draws dependency -> dependant
            edges.setdefault(a, set()).add(b)
    stale, todo = set(changed), list(changed)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in stale:
                stale.add(nxt)
                todo.append(nxt)
    return changed, stale


def stale_after(repo: Path, env: dict, change) -> tuple[set[str], set[str]]:
    """Apply ``change`` to params.yaml, read what is stale, and restore the file."""
    path = repo / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    change(params)
    write_params(path, params, sort_keys=False)
    try:
        return stale_stages(repo, env)
    finally:
        path.write_text(original)


def test_full_dag_outputs(tiny_repo):
    generated = [json.loads(x) for x in (tiny_repo / "data/synthetic/generated.jsonl").read_text().splitlines()]
    assert generated, "the tiny generator kept no hypotheses"
    assert {"id", "premise", "hypothesis", "intended_label", "generator", "prompt_version", "seed"} <= set(generated[0])
    stats = json.loads((tiny_repo / "metrics/generate.json").read_text())
    assert stats["generated"] == 42 and stats["kept"] == len(generated)
    assert stats["generated"] == stats["kept"] + sum(v for k, v in stats.items() if k.startswith("dropped_"))
    for name in ("classifier", "tinylm"):
        annotated = (tiny_repo / f"data/annotated/{name}.jsonl").read_text().splitlines()
        assert len(annotated) == len(generated)  # every row comes back, labelled or failed
        m = json.loads((tiny_repo / f"metrics/annotators/{name}.json").read_text())
        assert m["audit"]["n"] == 20 and 0 <= m["audit"]["accuracy"] <= 1
    assert "prompt_order_flip_rate" in json.loads((tiny_repo / "metrics/annotators/tinylm.json").read_text())["pool"]
    runs = sorted(p.stem for p in (tiny_repo / "metrics/eval").glob("*.json"))
    assert runs == [
        "classifier__mix",
        "classifier__warmup",
        "gold__gold_only",
        "tinylm__mix",
        "tinylm__warmup",
        "vote__mix",
        "vote__warmup",
    ]
    voted = [json.loads(x) for x in (tiny_repo / "data/aggregated/vote.jsonl").read_text().splitlines()]
    assert len(voted) == len(generated) and set(voted[0]["votes"]) == {"classifier", "tinylm"}
    assert "| vote | natural | warmup | synthetic ×1 → gold ×1 | 2 |" in (tiny_repo / "reports/results.md").read_text()
    ev = json.loads((tiny_repo / "metrics/eval/gold__gold_only.json").read_text())
    assert set(ev["seeds"]) == {"seed-1", "seed-2"} and 0.3 < ev["summary"]["all_accuracy_mean"] < 1
    table = (tiny_repo / "reports/results.md").read_text()
    assert "| tinylm | natural | warmup | synthetic ×1 → gold ×1 | 2 |" in table
    assert "| tinylm | natural | mix | synthetic ×1 + gold ×1, interleaved | 2 |" in table
    # per-epoch curves (DVCLive): one row per epoch of each phase, gold-val and synthetic-dev accuracy
    curves = tiny_repo / "metrics/training/tinylm__warmup/seed-1/plots/metrics"
    assert len((curves / "val/accuracy.tsv").read_text().splitlines()) == 1 + 2
    assert len((curves / "synthetic_dev/accuracy.tsv").read_text().splitlines()) == 1 + 2
    for png in ("regimes", "annotator_confusion", "label_distributions"):
        assert (tiny_repo / f"reports/{png}.png").stat().st_size > 1000
    assert "Majority vote of classifier, tinylm" in table
    quality = json.loads((tiny_repo / "metrics/annotation_quality.json").read_text())
    assert "classifier__tinylm" in quality["pairwise_kappa"]
    assert json.loads((tiny_repo / "plots/agreement/classifier__tinylm.json").read_text())[0].keys() == {
        "actual",
        "predicted",
    }
    card = (tiny_repo / "data/export/tinylm/README.md").read_text()
    assert "apache-2.0" in card.lower() and (tiny_repo / "data/export/tinylm/parquet/train.parquet").is_file()


# Keys a stage may read without listing them: they change where things are kept, not any output.
NOT_INPUTS = {"cache_dir": "where the request cache lives: moving it must re-run nothing"}


def _covers(key: str, path: str) -> bool:
    return path == key or path.startswith(key + ".")


def _reads_by_stage(env: dict) -> dict[str, set[str]]:
    reads: dict[str, set[str]] = {}
    for log in Path(env["SYNTHLLM_PARAMS_LOG"]).glob("*.json"):
        entry = json.loads(log.read_text())
        reads.setdefault(stage_name(entry["stage"]), set()).update(entry["reads"])
    return reads


def test_each_stage_lists_exactly_the_params_it_reads(tiny_repo, pipeline_env):
    """Issue 14, mechanical check 1: the params keys each stage read while the real pipeline ran
    (recorded from attribute access) against its dvc.yaml ``params:`` as dvc.lock resolved them. A
    key read but not listed means a change to it re-runs nothing (the curve stages read
    ``cascades`` unlisted); a key listed but never read re-runs a stage for nothing."""
    files = ["dvc.yaml", *sorted(str(p.relative_to(tiny_repo)) for p in tiny_repo.glob("pipelines/*/dvc.yaml"))]
    assert len(files) > 1  # the training, evaluation and curve pipelines are checked too
    lock = {
        name: stage
        for f in files
        for name, stage in yaml.safe_load((tiny_repo / f).with_suffix(".lock").read_text())["stages"].items()
    }
    current = [
        stage_name(s)
        for f in files
        for s in dvc("stage", "list", "--name-only", f, cwd=tiny_repo, env=pipeline_env).stdout.split()
    ]
    reads = _reads_by_stage(pipeline_env)
    problems = []
    for stage in sorted(current):
        listed = set((lock[stage].get("params") or {}).get("params.yaml", {}))
        got = reads.get(stage)
        if got is None:
            if listed:
                problems.append(f"{stage}: lists {sorted(listed)} but loads no params")
            continue
        unlisted = sorted(r for r in got if not any(_covers(k, r) for k in listed | set(NOT_INPUTS)))
        unread = sorted(k for k in listed if not any(_covers(k, r) or _covers(r, k) for r in got))
        if unlisted:
            problems.append(f"{stage}: reads {unlisted} but dvc.yaml does not list them")
        if unread:
            problems.append(f"{stage}: lists {unread} but never reads them")
    assert not problems, "\n".join(problems)


# Fields no stage of the tiny pipeline reads, and why that is right (not a param accepted and ignored).
INERT = {
    "cache_dir": "overridden by SYNTHLLM_CACHE_DIR in every test run (the default run reads it)",
    "gold.path": "read with gold.source local only; a path with source farstail is a params error",
    "generator_model.package": "read with generator_model.source gguf_package only (the tiny LM is source hf)",
    "generate.backend.kind": "the discriminator: validation picks the backend's class by it",
    "split.missing_confidence": "read only when split.min_confidence > 0 (rows without one are then kept or dropped)",
    "train.launcher": "read by dvc.yaml itself: the train stages' command line (${train.launcher})",
}


def _leaves(value, path: str = ""):
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    else:
        yield path


def test_every_param_of_the_configuration_is_read_by_some_stage(tiny_repo, pipeline_env):
    """Issue 14, mechanical check 2: no accepted-but-ignored param. Every field of the tiny
    configuration (inactive annotator configs aside: they are read only once switched on) is read
    by some stage, or is in INERT with the reason."""
    from synthllm.params import load_params

    params = load_params(tiny_repo / "params.yaml")
    used = set(params.annotators) | {c.expensive for c in params.cascades.values()}
    read = set().union(*_reads_by_stage(pipeline_env).values())
    ignored = []
    for leaf in _leaves(params):
        parts = leaf.split(".")
        if parts[0] == "annotator_configs" and parts[1] not in used:
            continue
        if any(_covers(r, leaf) for r in read) or any(_covers(k, leaf) for k in INERT):
            continue
        ignored.append(leaf)
    assert not ignored, f"accepted but never read by any stage: {ignored}"


def test_planted_key_is_nowhere_in_repo_or_cache(tiny_repo, pipeline_env):
    roots = [tiny_repo, Path(pipeline_env["SYNTHLLM_CACHE_DIR"])]
    files = [p for root in roots for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert any(p.name == "dvc.lock" for p in files) and any(p.suffix == ".sqlite" for p in files)
    assert [p for p in files if PLANTED_KEY.encode() in p.read_bytes()] == []


def test_second_repro_runs_nothing(tiny_repo, pipeline_env):
    out = dvc("repro", cwd=tiny_repo, env=pipeline_env).stdout
    assert "Running stage" not in out
    assert "up to date" in dvc("status", cwd=tiny_repo, env=pipeline_env).stdout


def test_metrics_are_readable_by_dvc(tiny_repo, pipeline_env):
    shown = json.loads(dvc("metrics", "show", "--json", cwd=tiny_repo, env=pipeline_env).stdout)
    files = next(iter(shown.values()))["data"]
    assert "metrics/eval/tinylm__warmup.json" in files


def test_train_param_change_stales_only_train_evaluate_report(tiny_repo, pipeline_env):
    changed, stale = stale_after(tiny_repo, pipeline_env, lambda p: p["train"].update(gold_epochs=2))
    assert changed == {
        "train_gold_only",
        "train@classifier-warmup",
        "train@classifier-mix",
        "train@tinylm-warmup",
        "train@tinylm-mix",
        "train@vote-warmup",
        "train@vote-mix",
        "curve@100",
        "curve@200",
        "curve_pool",  # the curves re-train every regime too
        "report",
    }  # the report prints each regime's passes
    assert all(
        s.split("@")[0]
        in {"train", "train_gold_only", "evaluate", "evaluate_gold_only", "curve", "curve_pool", "report"}
        for s in stale
    ), stale
    assert {"train_gold_only", "train@tinylm-warmup", "evaluate@classifier-mix", "report"} <= stale


def test_generate_param_change_stales_generate_and_downstream_not_gold(tiny_repo, pipeline_env):
    changed, stale = stale_after(tiny_repo, pipeline_env, lambda p: p["generate"].update(temperature=0.7))
    assert changed == {"generate"}
    assert {
        "generate",
        "annotate@tinylm",
        "aggregate@vote",
        "split@vote",
        "split@classifier",
        "train@classifier-warmup",
        "evaluate@tinylm-mix",
        "quality",
        "report",
    } <= stale
    assert not stale & {"gold", "generator_model", "train_annotator", "train_gold_only", "evaluate_gold_only"}


def test_retraining_one_annotator_reruns_no_other(tiny_repo, pipeline_env):
    changed, stale = stale_after(tiny_repo, pipeline_env, lambda p: p["annotator_training"].update(gold_epochs=2))
    assert changed == {"train_annotator", "curve@100", "curve@200", "curve_pool"}  # curves re-train it per budget
    assert "annotate@classifier" in stale and "annotate@tinylm" not in stale


def test_a_fix_in_any_imported_module_stales_the_stages_that_run_it(tiny_repo, pipeline_env):
    """classifiers/ngrams.py is imported by evaluate (to load models); stats.py by quality and report."""
    for module, must in (
        ("classifiers/ngrams.py", {"evaluate_gold_only", "evaluate@vote-mix", "annotate@classifier"}),
        ("stats.py", {"quality", "report", "aggregate@vote"}),
    ):
        path = tiny_repo / "src/synthllm" / module
        original = path.read_text()
        path.write_text(original + "\n# a fix\n")
        try:
            changed = changed_stages(tiny_repo, pipeline_env)
        finally:
            path.write_text(original)
        assert must <= changed, (module, changed)
        assert "gold" not in changed and "generate" not in changed


def file_hashes(root: Path, folders=("data", "models")) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def test_generation_is_byte_identical_without_the_request_cache(tiny_repo, pipeline_env, tmp_path):
    before = file_hashes(tiny_repo, ("data/synthetic",))
    env = {**pipeline_env, "SYNTHLLM_CACHE_DIR": str(tmp_path / "fresh-cache")}
    dvc("repro", "--force", "--single-item", "generate", cwd=tiny_repo, env=env)
    assert file_hashes(tiny_repo, ("data/synthetic",)) == before
    assert "up to date" in dvc("status", cwd=tiny_repo, env=pipeline_env).stdout


def test_queued_experiments_reuse_generation_from_run_cache(tiny_repo, pipeline_env):
    import time

    git_env = with_git_identity(pipeline_env)
    run(["git", "add", "-A"], tiny_repo, git_env)
    run(["git", "commit", "-qm", "baseline run"], tiny_repo, git_env)
    dvc("exp", "run", "--queue", "-n", "seed3", "-S", "train.seeds=[3]", cwd=tiny_repo, env=git_env)
    dvc("exp", "run", "--queue", "-n", "balanced", "-S", "split.strategy=balanced", cwd=tiny_repo, env=git_env)
    dvc("queue", "start", "-j", "1", cwd=tiny_repo, env=git_env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc("queue", "status", cwd=tiny_repo, env=git_env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc("exp", "show", "--json", cwd=tiny_repo, env=git_env).stdout)
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e["revs"]}
    assert {"seed3", "balanced"} <= set(exps)
    for name in ("seed3", "balanced"):
        metrics = exps[name]["data"]["metrics"]
        assert metrics["metrics/eval/gold__gold_only.json"]["data"]["summary"]["all_accuracy_mean"] > 0.3
    log = dvc("queue", "logs", "balanced", cwd=tiny_repo, env=git_env).stdout
    assert "Running stage 'generate'" not in log  # restored from the run cache, not regenerated
    assert "Running stage 'split@tinylm'" in log


def test_push_pull_roundtrip_through_a_local_remote(tiny_repo, pipeline_env, tmp_path):
    git_env = with_git_identity(pipeline_env)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=tiny_repo, env=git_env)
    dvc("push", cwd=tiny_repo, env=git_env)
    run(["git", "add", "-A"], tiny_repo, git_env)
    run(["git", "commit", "-qm", "remote", "--allow-empty"], tiny_repo, git_env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(tiny_repo), str(clone)], tmp_path, git_env)
    dvc("pull", cwd=clone, env=git_env)
    original = file_hashes(tiny_repo)
    assert original and file_hashes(clone) == original
    assert "up to date" in dvc("status", cwd=clone, env=git_env).stdout


def test_report_and_metrics_hold_only_the_configured_regimes(tiny_repo, pipeline_env):
    """After `dvc exp run -S 'regimes=[warmup]'` (the earlier run had warmup and mix), neither the
    report nor `dvc metrics show` holds a mix row. (Runs last: it changes the workspace.)"""
    git_env = with_git_identity(pipeline_env)
    dvc("exp", "run", "-S", "regimes=[warmup]", cwd=tiny_repo, env=git_env)
    table = (tiny_repo / "reports/results.md").read_text()
    assert "| warmup |" in table and "| gold_only |" in table and "| mix |" not in table
    csv = (tiny_repo / "reports/results.csv").read_text()
    assert ",mix," not in csv and ",warmup," in csv
    shown = json.loads(dvc("metrics", "show", "--json", cwd=tiny_repo, env=git_env).stdout)
    files = next(iter(shown.values()))["data"]
    evals = sorted(f for f in files if f.startswith("metrics/eval/"))
    assert evals == [
        "metrics/eval/classifier__warmup.json",
        "metrics/eval/gold__gold_only.json",
        "metrics/eval/tinylm__warmup.json",
        "metrics/eval/vote__warmup.json",
    ]
