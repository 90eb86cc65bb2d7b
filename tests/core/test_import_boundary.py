"""The import boundary: ``import nbexec`` and the core's lazy exports load no heavy library.

Each check runs in a fresh interpreter, since this test process has long since
imported whatever other tests needed.
"""

from __future__ import annotations

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
    ],
    ids=["import", "touch-core-exports", "from-import", "touch-all-exports", "core-modules", "load-config"],
)
def test_no_heavy_imports(code: str, tmp_path: Path) -> None:
    assert heavy_modules_after(code, tmp_path) == []


def test_the_widget_export_loads_the_widget_stack_but_neither_torch_nor_mlflow(tmp_path: Path) -> None:
    loaded = {m.split(".")[0] for m in heavy_modules_after("import nbexec\nnbexec.TrainingPanel", tmp_path)}
    assert loaded == {"IPython", "ipywidgets"}


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """Guards the test above: a heavy import must show up in the probe."""
    assert "IPython" in heavy_modules_after("import nbexec\nimport IPython", tmp_path)


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
