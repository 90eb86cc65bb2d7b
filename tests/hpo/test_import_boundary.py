"""The HPO and lineage modules load neither Optuna, torch, MLflow nor IPython until they are used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "mlflow", "optuna", "IPython", "ipywidgets")


@pytest.mark.parametrize("code", [
    "import nbexec\nnbexec.run_hpo, nbexec.run_final_training_workflow, nbexec.extract_lineage_from_best_model\n"
    "nbexec.apply_lineage_tags, nbexec.get_or_compute_study_key_hash, nbexec.lineage.Lineage",
    "import nbexec.hpo, nbexec.lineage\nfor n in nbexec.hpo.__all__ + nbexec.lineage.__all__:\n"
    "    getattr(nbexec.hpo if n in nbexec.hpo.__all__ else nbexec.lineage, n)",
    "import nbexec.cli\nnbexec.cli.build_parser()",
], ids=["top-level-exports", "package-exports", "cli-parser"])
def test_no_heavy_imports(code: str, tmp_path: Path) -> None:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
