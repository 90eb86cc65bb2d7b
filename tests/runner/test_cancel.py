"""Stopping a job leaves no process behind: cancel(), and the launching process dying."""

from __future__ import annotations

import json
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


def test_cancel_stops_what_is_left_when_the_guard_is_gone(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "hang.py", output_dir=tmp_path, nproc=2)
    wait_until(lambda: all(run.lines(r) for r in (0, 1)), what="both ranks ready")
    tree = _job_tree(run.pid)
    assert len(tree) >= 6  # guard, torchrun, 2 workers, 2 grandchildren

    os.kill(run.pid, signal.SIGKILL)  # the guard: torchrun and the grandchildren lose the process tree
    run.cancel(grace=5)
    assert alive(tree) == [], [p.cmdline() for p in alive(tree)]
    assert run.done() and run.outcome is not None
    # cancelled, or seen failing first (its guard was killed): either way what it says is what happened
    assert run.status in (RunStatus.KILLED, RunStatus.FAILED)
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == run.status.value


ORPHAN_MAKER = """\
import subprocess, sys, time
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                           stdout=subprocess.DEVNULL, start_new_session=True)
print("SLEEPER", sleeper.pid, flush=True)
time.sleep(3600)
"""


def test_stopping_a_job_finds_the_processes_its_tree_lost():
    from nbexec.runner.process import spawn_launcher, stop_job

    launcher = spawn_launcher([sys.executable, "-c", ORPHAN_MAKER], os.environ)
    try:
        line = launcher.stdout.readline().decode()
        assert line.startswith("SLEEPER "), line
        sleeper = psutil.Process(int(line.split()[1]))
        child = sleeper.parent()
        assert child is not None and child.ppid() == launcher.pid

        launcher.kill()  # SIGKILL to the guard: nothing of it stops the job
        launcher.wait()
        wait_until(lambda: not alive([child]), 30, "the guard's child to die with it")
        assert alive([sleeper]) and sleeper.ppid() != child.pid, "precondition: an orphan outside the tree"

        assert stop_job(launcher, grace=1) == []
        assert alive([sleeper]) == []
    finally:
        launcher.kill()
