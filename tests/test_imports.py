"""The import graph of instructrl/ (read with ast, imports inside functions included) flows one
way: cli -> pipeline -> stages -> (rollout, models, labelers, batches, ...) -> (losses,
records, stats). No stage imports another stage; web/ reaches neither torch nor labelers."""

from __future__ import annotations

import ast
from pathlib import Path

import instructrl

PACKAGE = Path(instructrl.__file__).parent

# the bottom layer: pure functions and records, no models, no files of other modules' making
BOTTOM = {"instructrl.losses", "instructrl.records", "instructrl.stats", "instructrl.errors"}
# what may sit above the stages: only these modules may import instructrl.stages.*
ABOVE_STAGES = {"instructrl.cli", "instructrl.pipeline"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, package: bool = False) -> set[str]:
    """Every module a file imports (absolute names; `from a import b` gives a and a.b)."""
    tree = ast.parse(source)
    here = module.split(".") if package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = here[: len(here) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(
            p.read_text(encoding="utf-8"), module_name(p), package=p.name == "__init__.py"
        )
        for p in PACKAGE.rglob("*.py")
        if "migrations" not in p.parts and p.parent.name != "data"
    }


def internal(names: set[str], modules: set[str]) -> set[str]:
    return {n for n in names if n in modules}


def test_no_stage_imports_another_stage():
    g = graph()
    offenders = [
        (m, dep)
        for m, deps in g.items()
        if m.startswith("instructrl.stages.")
        for dep in deps
        if dep.startswith("instructrl.stages.") and dep != m
    ]
    assert not offenders, offenders


def test_only_cli_and_pipeline_import_stages():
    g = graph()
    offenders = [
        (m, dep)
        for m, deps in g.items()
        if not m.startswith("instructrl.stages") and m not in ABOVE_STAGES
        for dep in deps
        if dep.startswith("instructrl.stages")
    ]
    assert not offenders, offenders


def test_nothing_imports_upwards():
    g = graph()
    pipeline_users = [m for m, deps in g.items() if "instructrl.pipeline" in deps]
    assert set(pipeline_users) <= {"instructrl.cli"}, pipeline_users
    cli_users = [m for m, deps in g.items() if "instructrl.cli" in deps]
    assert set(cli_users) <= {"instructrl.__main__"}, cli_users
    bottom = [
        (m, dep)
        for m in BOTTOM
        for dep in internal(g[m], set(g))
        if dep not in BOTTOM and dep != "instructrl"
    ]
    assert not bottom, bottom


def test_web_reaches_neither_torch_nor_labelers():
    g = graph()
    modules = set(g)
    for start in (m for m in g if m.startswith("instructrl.web")):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            deps = g.get(m, set())
            assert not any(d == "torch" or d.startswith("torch.") for d in deps), (start, m)
            assert "instructrl.labelers" not in deps, (start, m)
            todo.extend(internal(deps, modules))


def test_the_walker_sees_stage_to_stage_imports():
    # the checks above must be able to fail: imports inside functions, relative imports and
    # `from package import module` all name the imported stage
    source = (
        "def f():\n"
        "    from instructrl.stages.sft import Example\n"
        "    from . import reward\n"
        "    from .label import run\n"
    )
    found = imports_of(source, "instructrl.stages.ppo")
    assert {"instructrl.stages.sft", "instructrl.stages.reward", "instructrl.stages.label"} <= found
    assert module_name(PACKAGE / "stages" / "ppo.py") == "instructrl.stages.ppo"
    assert module_name(PACKAGE / "stages" / "__init__.py") == "instructrl.stages"
