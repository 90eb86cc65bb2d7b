"""The scheduler modules load no heavy or cloud package until a job needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MODULES = (
    "nbexec.schedulers", "nbexec.schedulers.multinode", "nbexec.schedulers.filetail",
    "nbexec.schedulers.api", "nbexec.schedulers.local",
    "nbexec.schedulers.slurm.script", "nbexec.schedulers.slurm.commands", "nbexec.schedulers.slurm.submit",
    "nbexec.schedulers.slurm.scheduler", "nbexec.schedulers.slurm.node", "nbexec.schedulers.azureml.job",
    "nbexec.schedulers.azureml.submit", "nbexec.schedulers.azureml.scheduler", "nbexec.schedulers.azureml.entry",
)


def test_scheduler_modules_import_no_torch_mlflow_or_azure(tmp_path: Path) -> None:
    code = (
        f"import json, sys\nimport {', '.join(MODULES)}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow', 'azure'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
