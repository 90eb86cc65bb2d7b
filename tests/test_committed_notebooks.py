"""The committed example notebooks show no absolute path of the machine that built them.

Their outputs (and the panel's saved widget state) are what a reader sees on GitHub or in a
fresh JupyterLab; a path such as ``sqlite:////home/me/nbexec/notebooks/mlflow.db`` tells them
nothing and leaks the build machine's layout. ``notebooks/build.py`` rewrites paths with the
``[paths: ...]`` rules of ``notebooks/sanitize.cfg`` after executing; this checks the result.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# An absolute path under a folder where checkouts, homes and temporary files live.
ABSOLUTE = re.compile(
    r"(?<![\w.:<~-])/(?:tmp|home|work|root|Users|var|private|mnt|opt|srv|content|data|scratch|workspace)/"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BINARY = {"buffers", "image/png", "image/jpeg", "application/pdf"}


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in BINARY:
                yield from _strings(item, f"{where}.{key}")


def _shown(path: Path) -> Iterator[tuple[str, str]]:
    """Every text a reader can see: outputs (joined per output) and the saved widget state."""
    nb = json.loads(path.read_text())
    for n, cell in enumerate(nb["cells"]):
        for k, output in enumerate(cell.get("outputs", [])):
            for where, text in _strings(output, f"cell {n} output {k}"):
                yield where, text
    yield from _strings(nb.get("metadata", {}).get("widgets", {}), "metadata.widgets")


def _offences(text: str) -> list[str]:
    text = ANSI.sub("", text)  # a coloured path (py-spy's, a traceback's) is still a path
    found = [m.start() for m in ABSOLUTE.finditer(text)]
    found += [m.start() for m in re.finditer(re.escape(str(REPO)), text)]
    return [text[max(0, i - 30): i + 70].replace("\n", "\\n") for i in sorted(set(found))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_absolute_path(path: Path) -> None:
    offences = [f"{where}: ...{snippet}..." for where, text in _shown(path) for snippet in _offences(text)]
    assert offences == [], (
        f"{path.name} shows absolute paths of the machine that built it; rebuild it with "
        f"`python notebooks/build.py {path.name}` (or `--scrub-only`):\n" + "\n".join(offences[:20])
    )


def test_the_build_makes_paths_relative_the_way_nbval_sanitizes_them() -> None:
    sys.path.insert(0, str(REPO / "notebooks"))
    try:
        import build
    finally:
        sys.path.remove(str(REPO / "notebooks"))
    rules = build.path_rules()
    cases = {
        "open: mlflow ui --backend-store-uri sqlite:////home/me/nbexec/notebooks/mlflow.db":
            "open: mlflow ui --backend-store-uri sqlite:///./mlflow.db",
        "checkpoint: /work/x/notebooks/outputs/run/checkpoint": "checkpoint: ./outputs/run/checkpoint",
        "artifacts file:///work/x/notebooks/mlartifacts/1": "artifacts ./mlartifacts/1",
        "#SBATCH --chdir=/srv/ci/nbexec/notebooks\n": "#SBATCH --chdir=./\n",
        "/home/me/nbexec/.venv/bin/python -m torch.distributed.run": "<venv>/bin/python -m torch.distributed.run",
        "copied to /tmp/tmpk2j3/backups/ner": "copied to <tmp>/backups/ner",
        "notebooks/06_training_panel.ipynb stays as it is": "notebooks/06_training_panel.ipynb stays as it is",
    }
    assert {text: build.scrub_text(text, rules) for text in cases} == cases
    for scrubbed in cases.values():
        assert not _offences(scrubbed)
    # the rules are the ones nbval applies (its own parser reads them from the same file)
    nbval = pytest.importorskip("nbval.plugin")
    patterns = dict(nbval.get_sanitize_patterns((REPO / "notebooks" / "sanitize.cfg").read_text()))
    assert all(rule.pattern in patterns and patterns[rule.pattern] == replace for rule, replace in rules)
