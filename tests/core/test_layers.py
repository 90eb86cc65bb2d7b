"""The architecture, checked: the import-linter contracts, no import cycle, mypy clean.

The contracts live in pyproject.toml ([tool.importlinter]) and are described in
docs/architecture.md. These tests run the real tools on the real tree, so a
change that breaks a layer fails here with the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "nbexec"

# The faces sit above the core: they may import anything, and nothing in the core imports them.
FACES = {"nbexec.notebook", "nbexec.cli", "nbexec.commands", "nbexec.options", "nbexec.__main__"}


def _tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin/)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return str(path)


def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _top_level_modules() -> set[str]:
    names = {f"nbexec.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {f"nbexec.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    return names


def test_import_linter_contracts_are_kept():
    proc = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"a layer contract is broken:\n{report}"
    assert f"{len(_contracts())} kept, 0 broken" in report, report


def test_every_core_module_is_under_the_top_layer_contract():
    """A new module must be placed: in the core (listed as a source of the first contract) or a face.

    Otherwise a new core module could import the notebook layer and no contract would notice.
    """
    top = _contracts()[0]
    assert "nbexec.notebook" in top["forbidden_modules"], top["name"]
    placed = set(top["source_modules"]) | FACES
    unplaced = sorted(_top_level_modules() - placed)
    assert not unplaced, (
        f"{unplaced} are in neither the core's list nor the faces: add them to the first "
        "[[tool.importlinter.contracts]] source_modules in pyproject.toml (or to FACES here)"
    )
    missing = sorted(set(top["source_modules"]) - _top_level_modules())
    assert not missing, f"the contract lists modules that no longer exist: {missing}"


def test_the_runtime_import_graph_has_no_cycle():
    """Counting imports inside functions; leaving out `if TYPE_CHECKING:` imports, which never run."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("nbexec", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}

    # Tarjan's strongly connected components, iteratively (the graph is ~130 modules).
    low, order, on_stack, stack, cycles = {}, {}, set(), [], []
    for root in modules:
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                order[node] = low[node] = len(order)
                stack.append(node)
                on_stack.add(node)
            children = edges[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in order:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], order[child])
                continue
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component, key=index.get))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    assert not cycles, f"modules that import each other (through imports inside functions too): {cycles}"


def test_mypy_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mypy (configured in pyproject.toml [tool.mypy]) reports:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout
