"""``%train --scheduler slurm`` in a real Jupyter kernel: lines stream into the cell's
view from the job's log files, and interrupting the cell ``scancel``s the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .test_slurm import _job_processes, _mlflow_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebook"))
from kernel_driver import (  # the notebook tests' kernel driver (path set above)
    Kernel,
    kernel_env,
)
from live_frames import frames  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "scripts"


def test_interrupting_the_cell_cancels_the_slurm_job(slurm_cluster, tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, kernel_env(os.environ["MLFLOW_TRACKING_URI"]))  # SLURM_CONF included
    try:
        assert kernel.run("%load_ext nbexec").ok

        ready: list[str] = []

        def both_ranks_ready(messages: list[dict[str, Any]]) -> bool:
            shown = frames(messages)  # what the live view's widget was sent
            if shown and "ready rank 0" in shown[-1].text and "ready rank 1" in shown[-1].text:
                ready.append(shown[-1].text)
                return True
            return False

        cell = kernel.run(
            f"%train --scheduler slurm --entrypoint {SCRIPTS / 'hang.py'} --nproc 2 --output {tmp_path / 'runs'} "
            "--run-name hung --all-ranks",
            timeout=180, interrupt_after=both_ranks_ready,
        )
        assert ready, "the job's lines never reached the cell's view"
        assert cell.error is not None and cell.error["ename"] == "KeyboardInterrupt"
        assert "run hung cancelled (KILLED)" in "\n".join(cell.error["traceback"])
        run_dir = tmp_path / "runs" / "hung"
        job_id = (run_dir / "slurm" / "job_id").read_text().strip()
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               check=True, timeout=30).stdout
        job_state = next((f for f in shown.split() if f.startswith("JobState=")), shown)
        assert job_state == "JobState=CANCELLED", shown
        assert _job_processes(run_dir) == []
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "KILLED"
        assert _mlflow_status(result["mlflow_run_id"]) == "KILLED"
    finally:
        kernel.close()
