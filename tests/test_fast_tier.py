"""The fast tier (``python -m pytest -m "not slow"``) still reaches every module of rpg/.

A static scan, no coverage tool: a test file belongs to the fast tier when it has a test not marked ``slow`` (a
``pytestmark`` with ``slow`` takes the whole file out). Its rpg imports are those at module level, in its helper
functions and fixtures, in its tests not marked ``slow``, and in the tests/ helper modules it imports
(conftest.py always counts); a module is reached when one of them imports it directly or through the modules
it imports (function-local imports included, as in tests/test_architecture.py), runs it with ``python -m``, or is
a package above one.

``python tests/test_fast_tier.py`` prints, for every module of rpg/, the fast-tier test files that reach it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_architecture import MODULES, graph, rpg_imports

TESTS = Path(__file__).resolve().parent


def is_slow(node: ast.AST) -> bool:
    """Whether ``node`` (a decorator or a ``pytestmark`` value) names ``pytest.mark.slow``."""
    return any(isinstance(n, ast.Attribute) and n.attr == "slow" for n in ast.walk(node))


def is_test(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


def fast_imports(path: Path) -> tuple[bool, set[str], set[str]]:
    """``(has a fast test, rpg modules imported outside slow tests, tests/ helper modules imported)``."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if is_slow(node.value):
                return False, set(), set()
    slow_tests, fast_tests = [], []
    for node in ast.walk(tree):
        if is_test(node):
            (slow_tests if any(is_slow(d) for d in node.decorator_list) else fast_tests).append(node)
    # the file without its slow tests: what a fast-tier run imports and calls
    slow_ids = {id(n) for n in slow_tests}
    for parent in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if isinstance(block, list):
                setattr(parent, field, [n for n in block if id(n) not in slow_ids])
    helpers = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        helpers |= {n for n in names if (TESTS / f"{n}.py").exists()}
    return bool(fast_tests) or path.name == "conftest.py", rpg_imports(tree) | run_as_main(tree), helpers


def run_as_main(tree: ast.AST) -> set[str]:
    """The rpg modules a command line ``[..., "-m", "rpg.x", ...]`` in the tree runs (rpg -> rpg.__main__)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            words = [n.value if isinstance(n, ast.Constant) else None for n in node.elts]
            for flag, name in zip(words, words[1:]):
                if flag == "-m" and isinstance(name, str) and name.split(".")[0] == "rpg":
                    out |= {m for m in (name, f"{name}.__main__") if m in MODULES}
    return out


def reached_by() -> dict[str, set[str]]:
    """rpg module -> the fast-tier test files that reach it (conftest.py counts for every test file)."""
    edges = graph()
    scans = {p.stem: fast_imports(p) for p in TESTS.glob("*.py") if p.name != Path(__file__).name}
    out: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, (fast, _, _) in scans.items():
        if not fast or not (name.startswith("test_") or name == "conftest"):
            continue
        todo, seen_helpers = [name], set()
        reached: set[str] = set()
        while todo:  # the test file and the tests/ helper modules it imports
            helper = todo.pop()
            seen_helpers.add(helper)
            _, imported, helpers = scans[helper]
            reached |= imported
            todo += [h for h in helpers if h not in seen_helpers and h in scans]
        stack = list(reached & MODULES)
        while stack:  # through the modules they import
            m = stack.pop()
            for n in edges.get(m, ()):
                if n not in reached:
                    reached.add(n)
                    stack.append(n)
        for m in set(reached):  # importing rpg.a.b runs rpg/a/__init__.py and rpg/__init__.py
            parts = m.split(".")
            reached |= {".".join(parts[:i]) for i in range(1, len(parts))}
        for m in reached & MODULES:
            out[m].add(f"{name}.py")
    return out


def test_every_module_of_rpg_is_reached_by_the_fast_tier():
    missing = sorted(m for m, files in reached_by().items() if not files)
    assert not missing, f"not imported by any test outside the slow tier: {missing}"


def test_the_scan_leaves_out_slow_tests_and_slow_files(tmp_path):
    (tmp_path / "test_a.py").write_text(
        "import pytest\nfrom rpg.io import read_json\n\n\n@pytest.mark.slow\ndef test_slow():\n"
        "    from rpg.pdiff import trainer\n\n\ndef test_fast():\n    run(['python', '-m', 'rpg', 'sample'])\n"
    )
    assert fast_imports(tmp_path / "test_a.py") == (True, {"rpg.io", "rpg", "rpg.__main__"}, set())
    (tmp_path / "test_b.py").write_text("import pytest\nimport rpg.io\n\npytestmark = pytest.mark.slow\n\n\n"
                                        "def test_x():\n    pass\n")  # fmt: skip
    assert fast_imports(tmp_path / "test_b.py") == (False, set(), set())


if __name__ == "__main__":
    for module, files in sorted(reached_by().items()):
        print(f"{module:34} {len(files):3}  {' '.join(sorted(files)) or '-- NOT IN THE FAST TIER --'}")
