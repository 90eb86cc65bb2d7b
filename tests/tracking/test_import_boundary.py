"""Importing nbexec.tracking (and touching every name it exports) loads neither mlflow nor torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_tracking_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import nbexec.tracking as t\n"
        "for name in t.__all__: getattr(t, name)\n"
        "import nbexec.tracking.child_logger, nbexec.tracking.finish\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'torch', 'IPython'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
