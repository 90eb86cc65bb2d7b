"""Stopping a job leaves no process behind: cancel(), and the launching process dying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

import nbexec
from nbexec import RunStatus

from .conftest import alive, wait_until

pytestmark = pytest.mark.slow


def _job_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_cancel_mid_run_leaves_no_process(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "hang.py", output_dir=tmp_path, nproc=2)
    wait_until(lambda: all(run.lines(r) for r in (0, 1)), what="both ranks ready")
    tree = _job_tree(run.pid)
    # torchrun + 2 workers + 2 grandchildren
    assert len(tree) >= 5

    run.cancel(grace=5)  # returns once no process of the job is left, whatever the machine's speed
    assert alive(tree) == []
    assert run.status is RunStatus.KILLED
    run.cancel()  # idempotent
    assert run.status is RunStatus.KILLED


def test_killing_the_launching_process_kills_the_job(tmp_path, scripts):
    kernel = subprocess.Popen(
        [sys.executable, str(scripts / "kernel.py"), str(scripts / "hang.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = kernel.stdout.readline()
        assert line.startswith("LAUNCHER "), line
        launcher = int(line.split()[1])
        logs = tmp_path / "orphan" / "logs"
        wait_until(
            lambda: all((logs / f"rank{r}.log").exists() and (logs / f"rank{r}.log").read_text() for r in (0, 1)),
            what="both ranks ready",
        )
        tree = _job_tree(launcher)
        assert len(tree) >= 5

        os.kill(kernel.pid, signal.SIGKILL)
        kernel.wait()
        # the guard stops the job (grace period, then SIGKILL); the wait only guards a hang
        wait_until(lambda: not alive(tree), 120, "the job to stop after its launching process died")
    finally:
        kernel.kill()
