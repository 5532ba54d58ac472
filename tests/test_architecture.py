"""The shape of the code: the import graph has no cycles, layers run one way, scripts are thin, and the package
does not depend on the repository's layout."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rpg"
BASE = {"rpg.errors", "rpg.io", "rpg.runtime", "rpg.optim", "rpg.config"}  # below every domain package


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PKG.rglob("*.py")}


def rpg_imports(source: Path | ast.AST) -> set[str]:
    """Every rpg module imported anywhere in the file (or parsed tree; function-local imports included);
    ``from rpg.x import y`` counts as importing the module ``rpg.x.y`` when there is one, else ``rpg.x``."""
    out = set()
    for node in ast.walk(source if isinstance(source, ast.AST) else ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "rpg"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rpg":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    assert set(files) == MODULES
    edges = {}
    for name, path in files.items():
        edges[name] = {m for m in rpg_imports(path) if m in files and m != name}
    return edges


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles_between_modules():
    assert find_cycle(graph()) is None, find_cycle(graph())


def test_no_import_cycles_between_packages():
    pkg_edges: dict[str, set[str]] = {}
    for a, targets in graph().items():
        for b in targets:
            if package(a) != package(b) and not (a == "rpg" or b == "rpg"):
                pkg_edges.setdefault(package(a), set()).add(package(b))
    assert find_cycle(pkg_edges) is None, find_cycle(pkg_edges)


def test_layers_run_one_way():
    edges = graph()
    for a, targets in edges.items():
        for b in targets:
            if package(b) == "rpg.stages":
                assert package(a) == "rpg.stages", f"{a} imports the stage layer ({b})"
            if package(a) in BASE:
                assert package(b) in BASE, f"{a} (a base module) imports the domain module {b}"
    assert not any(package(b) in ("rpg.evaluate", "rpg.report") for b in edges["rpg.tasks.collect"])


def test_workflow_scripts_only_call_the_stage_layer():
    for script in (ROOT / "workflow" / "scripts").glob("*.py"):
        imported = rpg_imports(script)
        assert imported, script.name
        assert all(m.startswith(("rpg.stages", "rpg.tasks.plan", "rpg.io")) for m in imported), (script.name, imported)
        assert len(script.read_text().splitlines()) <= 40, f"{script.name} is not thin"


def test_package_does_not_reach_into_the_repository():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        assert "workflow/schemas" not in text and '"workflow"' not in text, path
        assert "PYTHONPATH" not in text, path


def test_the_project_never_points_at_the_developers_design_notes():
    files = [*PKG.rglob("*.py"), *(ROOT / "configs").glob("*.yaml"), *(ROOT / "workflow").rglob("*"),
             *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").rglob("*.py"), ROOT / "README.md",
             ROOT / "Snakefile", ROOT / "config.yaml"]  # fmt: skip
    for path in (p for p in files if p.is_file()):
        text = path.read_text(errors="ignore")
        assert "DESIGN" not in text and "shared/" not in text, path
