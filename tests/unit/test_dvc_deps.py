"""dvc.yaml's code dependencies are exactly what each stage runs: the import closure, inside
``synthllm``, of the stage module its command starts. A new module imported by a stage, or a stale
one no longer imported, fails here — so nobody has to remember to edit dvc.yaml. ``python
tests/unit/test_dvc_deps.py`` rewrites the lists in dvc.yaml to match.

A package whose every module is in a closure is listed as its folder (``src/synthllm/params``: one
hash for six files, ``.dvcignore`` keeping ``__pycache__`` out of it), which is the same set of
files: DVC re-parses and re-writes the whole dvc.lock after every stage, and at 2,141 entries that
took ~2.5 s a stage, 68 times a run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(module: str) -> set[Path]:
    """Every synthllm source file that importing ``module`` may execute: its imports (at top level
    or inside functions), their imports, and the packages' ``__init__`` files on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # parent packages run their __init__ first
            path = module_file(".".join(parts[:k]))
            if path is None or path in seen:
                continue
            seen.add(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.startswith("synthllm")]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthllm"):
                    todo.append(node.module)
                    todo += [
                        f"{node.module}.{a.name}"
                        for a in node.names
                        if module_file(f"{node.module}.{a.name}") is not None
                    ]
    return seen


def package_files(dep: str) -> set[str]:
    """The modules a dependency stands for: a file itself, a package folder its .py files."""
    path = ROOT / dep
    if path.is_dir():
        return {f.relative_to(ROOT).as_posix() for f in path.glob("*.py")}
    return {dep}


def compressed(closure: set[Path]) -> list[str]:
    """The closure as dvc.yaml lists it: a package wholly in it as its folder, other modules as files."""
    files = {p.relative_to(ROOT).as_posix() for p in closure}
    deps = set(files)
    for init in sorted(SRC.glob("synthllm/*/__init__.py")):
        folder = init.parent.relative_to(ROOT).as_posix()
        members = package_files(folder)
        if members <= files:
            deps = (deps - members) | {folder}
    return sorted(deps)


def pipeline_files() -> list[Path]:
    """dvc.yaml and the pipeline files beside it (pipelines/*/dvc.yaml)."""
    return [ROOT / "dvc.yaml", *sorted(ROOT.glob("pipelines/*/dvc.yaml"))]


def stage_modules() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (the synthllm module its command runs, its src/ dependencies)."""
    stages = {name: stage for f in pipeline_files() for name, stage in yaml.safe_load(f.read_text())["stages"].items()}
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = re.search(r"(synthllm\.stages\.\w+)", body["cmd"])
        assert match, f"stage {name}: command does not run a synthllm.stages module"
        out[name] = (match.group(1), [d for d in body.get("deps", []) if str(d).startswith("src/")])
    return out


def test_every_stage_depends_on_exactly_the_code_it_imports():
    problems = []
    for name, (module, deps) in stage_modules().items():
        closure = {p.relative_to(ROOT).as_posix() for p in import_closure(module)}
        listed = set().union(*(package_files(d) for d in deps)) if deps else set()
        missing = sorted(closure - listed)
        extra = sorted(listed - closure)
        if not missing and not extra and sorted(deps) != compressed(import_closure(module)):
            problems.append(f"{name}: list whole packages as their folder: {compressed(import_closure(module))}")
        if missing:
            problems.append(f"{name}: dvc.yaml misses {missing}")
        if extra:
            problems.append(f"{name}: dvc.yaml lists {extra}, which {module} does not import")
    assert not problems, "\n".join(problems)


def test_the_closure_follows_imports_inside_functions_and_packages():
    closure = {p.name for p in import_closure("synthllm.stages.annotate")}
    # annotate imports the classifier backend inside a function, and runner through the package
    assert {"backend.py", "runner.py", "annotation.py", "__init__.py", "root.py", "sections.py"} <= closure
    assert "report.py" not in closure


def fix_dvc_yaml() -> None:
    """Rewrite the src/ dependency lists in every pipeline file to each stage's closure (run this file)."""
    modules = {name: module for name, (module, _) in stage_modules().items()}
    for path in pipeline_files():
        lines, out, stage, i = path.read_text().splitlines(), [], None, 0
        while i < len(lines):
            line = lines[i]
            match = re.match(r"^  (\w+):\s*$", line)
            if match:
                stage = match.group(1)
            if line.strip().startswith("- src/synthllm"):
                indent = line[: len(line) - len(line.lstrip())]
                while i < len(lines) and lines[i].strip().startswith("- src/synthllm"):
                    i += 1
                out += [f"{indent}- {d}" for d in compressed(import_closure(modules[stage]))]
                continue
            out.append(line)
            i += 1
        path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    fix_dvc_yaml()
