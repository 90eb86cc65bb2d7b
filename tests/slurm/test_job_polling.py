"""A submitted job is over only when Slurm says so, even when squeue fails for a moment.

Under load the local controller can time out a query; squeue then exits non-zero
and prints nothing. A failure of the query must not end the run while the job
still runs (seen in CI: the interrupted job was reported over while Slurm still
had it, and its processes were still being stopped). The Slurm tools here are
stand-ins on PATH: a controller timing out on request cannot be arranged with
the real cluster.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nbexec.schedulers.slurm import submit as slurm_run
from nbexec.schedulers.slurm.submit import SlurmJob


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_failing_squeue_does_not_end_a_job_slurm_still_runs(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    state = tmp_path / "state"
    state.write_text("RUNNING")
    _tool(tmp_path, "squeue", 'echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2\nexit 1\n')
    _tool(tmp_path, "scontrol", f'echo "JobId=7 JobName=hung JobState=$(cat {state}) Reason=None ExitCode=0:15"\n')
    monkeypatch.setattr(slurm_run, "POLL_S", 0.0)
    job = SlurmJob("7", {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})

    assert job.poll() is None and job.last_seen == "RUNNING"
    state.write_text("COMPLETING")  # cancelled, processes still being stopped
    assert job.poll() is None and job.last_seen == "COMPLETING"

    state.write_text("CANCELLED")
    assert job.poll() == -15  # killed by SIGTERM, as scancel does
    assert job.final is not None and job.final.state == "CANCELLED" and job.final.signal == 15
    assert job.state == "CANCELLED"


def test_a_job_neither_tool_knows_any_more_is_over(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _tool(tmp_path, "squeue", "exit 0\n")  # not in the queue
    _tool(tmp_path, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2\nexit 1\n')
    monkeypatch.setattr(slurm_run, "POLL_S", 0.0)
    job = SlurmJob("8", {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})

    assert job.poll() == 1
    assert job.final is not None and job.final.state == "UNKNOWN"
