"""dvc.yaml's code dependencies are exactly what each stage runs: the import closure, inside
``synthllm``, of the stage module its command starts. A new module imported by a stage, or a stale
one no longer imported, fails here — so nobody has to remember to edit dvc.yaml. ``python
tests/unit/test_dvc_deps.py`` rewrites the lists in dvc.yaml to match."""

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


def stage_modules() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (the synthllm module its command runs, its src/ dependencies)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
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
        missing = sorted(closure - set(deps))
        extra = sorted(set(deps) - closure)
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
    """Rewrite the src/ dependency lists in dvc.yaml to each stage's closure (run this file)."""
    modules = {name: module for name, (module, _) in stage_modules().items()}
    lines, out, stage, i = (ROOT / "dvc.yaml").read_text().splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^  (\w+):\s*$", line)
        if match:
            stage = match.group(1)
        if line.strip().startswith("- src/synthllm/"):
            indent = line[: len(line) - len(line.lstrip())]
            while i < len(lines) and lines[i].strip().startswith("- src/synthllm/"):
                i += 1
            out += [f"{indent}- {p.relative_to(ROOT).as_posix()}" for p in sorted(import_closure(modules[stage]))]
            continue
        out.append(line)
        i += 1
    (ROOT / "dvc.yaml").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    fix_dvc_yaml()
