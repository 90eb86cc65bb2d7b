"""The import boundary: ``import nbexec`` and the core's lazy exports load no heavy library; the core
never imports the notebook layer, and the render package no front end.

Each import check runs in a fresh interpreter, since this test process has long
since imported whatever other tests needed; the layer checks read the source.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nbexec

HEAVY = ("torch", "mlflow", "IPython", "ipywidgets")
CORE_EXPORTS = (
    "load_config",
    "prepare",
    "launch",
    "execute_training_subprocess",
    "detect_hardware",
    "verify_training_environment",
)

PROBE = """
import json, sys
{code}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def heavy_modules_after(code: str, cwd: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the heavy modules it left in sys.modules."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import nbexec",
        "import nbexec\n" + "\n".join(f"nbexec.{name}" for name in CORE_EXPORTS),
        f"from nbexec import {', '.join(CORE_EXPORTS)}",
        "import nbexec\nfor name in nbexec.__all__:\n"
        "    if not nbexec._EXPORTS.get(name, '').startswith('nbexec.notebook'): getattr(nbexec, name)",
        "import nbexec.cli, nbexec.checks, nbexec.executor, nbexec.plan, nbexec.child",
        "from nbexec.config import load_config\nload_config(None, overrides=['training.epochs=1'])",
        "import nbexec.render.formats, nbexec.render.markup, nbexec.render.links, nbexec.render.lineage, "
        "nbexec.render.summary, nbexec.render.live",
    ],
    ids=["import", "touch-core-exports", "from-import", "touch-all-exports", "core-modules", "load-config", "render"],
)
def test_no_heavy_imports(code: str, tmp_path: Path) -> None:
    assert heavy_modules_after(code, tmp_path) == []


def test_the_widget_export_loads_the_widget_stack_but_neither_torch_nor_mlflow(tmp_path: Path) -> None:
    loaded = {m.split(".")[0] for m in heavy_modules_after("import nbexec\nnbexec.TrainingPanel", tmp_path)}
    assert loaded == {"IPython", "ipywidgets"}


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """Guards the test above: a heavy import must show up in the probe."""
    assert "IPython" in heavy_modules_after("import nbexec\nimport IPython", tmp_path)


PACKAGE = Path(nbexec.__file__).parent


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names, in functions and ``TYPE_CHECKING`` blocks too."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]  # from nbexec import notebook
    return names


def is_notebook_layer(module: str) -> bool:
    return module == "nbexec.notebook" or module.startswith("nbexec.notebook.")


def test_the_core_never_imports_the_notebook_layer() -> None:
    """Only the layer itself and ``nbexec/__init__.py`` (``%load_ext`` and the lazy ``TrainingPanel``) name it."""
    offenders = [
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "notebook" and path != PACKAGE / "__init__.py"
        for module in imported_modules(path)
        if is_notebook_layer(module)
    ]
    assert offenders == []


def test_render_imports_no_front_end_and_no_heavy_library_not_even_lazily() -> None:
    for path in sorted((PACKAGE / "render").glob("*.py")):
        bad = [m for m in imported_modules(path) if m.split(".")[0] in HEAVY or is_notebook_layer(m)]
        assert bad == [], path


def test_the_import_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    """Guards the two tests above: a lazy import must be found too."""
    module = tmp_path / "m.py"
    module.write_text("def show():\n    from nbexec.notebook.live import LiveRunView\n    import IPython\n")
    assert imported_modules(module) == ["nbexec.notebook.live", "nbexec.notebook.live.LiveRunView", "IPython"]


@pytest.mark.parametrize("name", nbexec.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(nbexec, name)

    assert value is not None
    if name != "__version__":
        assert value.__name__ == name
    assert name in dir(nbexec)


def test_core_exports_are_among_the_public_names() -> None:
    assert set(CORE_EXPORTS) <= set(nbexec.__all__)


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        nbexec.no_such_thing  # noqa: B018
