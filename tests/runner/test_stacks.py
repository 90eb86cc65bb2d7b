"""When a job hangs, on real torchrun jobs (gloo, 2 ranks): stacks on demand, stall detection,
cancel on stall, and the root cause of a collective timeout.

The job is tests/fixtures/scripts/stuck_allreduce.py: rank 1 sleeps before an
all_reduce, rank 0 waits in it. Every wait polls an observable condition; the
timeouts given only guard against a test blocking forever.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import nbexec
from nbexec import RunStatus, TrainingFailed
from nbexec.runner.sinks import Sink

from .conftest import alive, wait_until

pytestmark = pytest.mark.slow

NO_TRACKING = "tracking.enabled=false"


def _line_of(script: Path, text: str) -> int:
    return next(i for i, line in enumerate(script.read_text().splitlines(), 1) if text in line)


def _in_place(run) -> object:
    """Stacks once rank 0 is inside the all_reduce and rank 1 in its sleep (None before)."""
    snap = run.stacks(save=False)
    if snap.rank(0).collective == "all_reduce" and snap.rank(1).frame is not None \
            and "time.sleep" in snap.rank(1).frame.source:
        return snap
    return None


def _job_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


class Lines(Sink):
    """Keeps every line the job shows (what a terminal would print)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def on_lines(self, lines) -> None:
        self.texts += [ln.text for ln in lines]


def test_stacks_show_rank0_in_all_reduce_and_rank1_in_sleep_with_file_and_line(tmp_path, scripts):
    script = scripts / "stuck_allreduce.py"
    run = nbexec.launch(entrypoint=script, output_dir=tmp_path, nproc=2,
                        overrides=[NO_TRACKING, "launch.stall_timeout=0"])
    try:
        wait_until(lambda: len(list((run.run_dir / "logs").glob("rank*.process.json"))) == 2, what="both hooks")
        found: list[object] = []
        wait_until(lambda: found.append(_in_place(run)) or found[-1], what="rank 0 in all_reduce, rank 1 asleep")

        snap = run.stacks()  # saved, as the button and the CLI do
        rank0, rank1 = snap.rank(0), snap.rank(1)
        assert rank0.collective == "all_reduce" and rank1.collective is None
        assert rank0.frame.file == str(script) and rank0.frame.line == _line_of(script, "dist.all_reduce(total)")
        assert rank1.frame.file == str(script) and rank1.frame.line == _line_of(script, "time.sleep(3600)")
        assert rank1.frame.function == "<module>" and rank1.frame.source.startswith("time.sleep(3600)")
        top = rank0.main.frames[0]  # most recent call first: torch's all_reduce
        assert top.function == "all_reduce" and top.short_file.startswith("torch/distributed/")
        assert snap.waiting == {0: "all_reduce"} and snap.not_waiting == [1]
        assert [r.pid for r in snap.ranks] == [json.loads((run.run_dir / f"logs/rank{r}.process.json").read_text())
                                              ["pid"] for r in (0, 1)]

        # saved for later, and shown side by side
        assert snap.path.parent == run.run_dir / "logs" and snap.path.name.startswith("stacks-")
        saved = snap.path.read_text()
        assert f"stuck_allreduce.py:{_line_of(script, 'time.sleep(3600)')}" in saved and "all_reduce" in saved
        text = snap.__str__()
        side_by_side = [ln for ln in text.splitlines() if "rank 0 (pid" in ln and "rank 1 (pid" in ln]
        assert side_by_side, text
        assert "waiting in all_reduce" in snap._repr_html_() and "time.sleep(3600)" in snap._repr_html_()

        # the rank logs stay clean: the dumps went to the ranks' own stacks files
        for rank in (0, 1):
            assert "most recent call first" not in (run.run_dir / f"logs/rank{rank}.log").read_text()

        # another terminal: nbexec stacks RUN_DIR finds the ranks from the run dir
        cli = subprocess.run([sys.executable, "-m", "nbexec.cli", "stacks", str(run.run_dir)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert cli.returncode == 0, cli.stderr
        assert "rank 0: in all_reduce, called from" in cli.stdout
        assert f"stuck_allreduce.py:{_line_of(script, 'time.sleep(3600)')} in <module>: time.sleep(3600)" in cli.stdout
        assert len(list((run.run_dir / "logs").glob("stacks-*.txt"))) == 2
        assert run.status is RunStatus.RUNNING  # taking stacks stopped nothing
    finally:
        run.cancel(grace=5)
    with pytest.raises(nbexec.NbexecError, match="is over"):
        run.stacks()


def test_native_frames_through_py_spy(tmp_path, scripts):
    from nbexec.stacks.snapshot import py_spy

    if py_spy() is None:
        pytest.skip("py-spy is not installed (pip install 'nbexec[stacks]')")
    run = nbexec.launch(entrypoint=scripts / "stuck_allreduce.py", output_dir=tmp_path, nproc=2,
                        overrides=[NO_TRACKING, "launch.stall_timeout=0"])
    try:
        wait_until(lambda: run.lines(0) and run.lines(1) and _in_place(run), what="ranks in place")
        snap = run.stacks(ranks=[1], native=True)
        native = snap.rank(1).native
        assert "Thread" in native and "sleep" in native, native  # C frames (the libc sleep) and Python ones
        assert "stuck_allreduce.py" in native
    finally:
        run.cancel(grace=5)


def test_stall_is_found_said_and_cancel_on_stall_leaves_no_process(tmp_path, scripts):
    import mlflow

    script = scripts / "stuck_allreduce.py"
    lines = Lines()
    run = nbexec.launch(entrypoint=script, output_dir=tmp_path, nproc=2, sinks=[lines],
                        overrides=["launch.stall_timeout=3", "launch.on_stall=cancel"])
    wait_until(lambda: run.lines(0) and run.lines(1), what="both ranks running")
    tree = _job_tree(run.pid)
    assert run.wait(timeout=180) is RunStatus.FAILED  # ends by itself: nbexec cancelled it
    assert alive(tree) == [], [p.cmdline() for p in alive(tree)]

    stall = run.stalls[0]
    assert stall.ranks == (1,) and stall.action == "cancel"
    assert stall.message.startswith("rank 1 has not progressed for ")
    assert "time.sleep(3600)" in stall.message and "rank 0 is waiting in all_reduce" in stall.message
    said = [t for t in lines.texts if t.startswith("nbexec: stall: ")]
    assert said and "cancelling the job (launch.on_stall: cancel)" in said[0] and "logs/stacks-" in said[0]

    with pytest.raises(TrainingFailed) as info:
        run.result()
    cause = info.value.root_cause
    assert cause.rank == 1 and cause.exc_type == "Stall"
    assert cause.where.endswith(f"stuck_allreduce.py:{_line_of(script, 'time.sleep(3600)')}")
    assert "time.sleep(3600)" in cause.traceback
    saved = stall.stacks.path.read_text()
    assert saved.startswith(f"# nbexec stacks of {run.name}") and f"# stall: {stall.message}" in saved

    tags = mlflow.get_run(run.outcome.mlflow_run_id).data.tags
    assert tags["nbexec.stall"] == "true" and tags["nbexec.stall.ranks"] == "1"
    assert tags["nbexec.stall.message"] == stall.message
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.outcome.mlflow_run_id, "logs")]
    assert f"logs/{stall.stacks.path.name}" in artifacts


def test_stall_with_warn_says_so_and_the_job_goes_on(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "stuck_allreduce.py", output_dir=tmp_path, nproc=2,
                        overrides=[NO_TRACKING, "launch.stall_timeout=3"])  # on_stall: warn, the default
    try:
        wait_until(lambda: run.stall is not None, 120, "the stall to be found")
        assert run.status is RunStatus.RUNNING
        assert run.stall.ranks == (1,) and run.stall.stacks.path.is_file()
        assert run.stalls == [run.stall]
    finally:
        run.cancel(grace=5)
    assert run.status is RunStatus.KILLED  # the user's cancel, not a stall's


def test_collective_timeout_root_cause_is_the_rank_that_never_came(tmp_path, scripts):
    script = scripts / "stuck_allreduce.py"
    run = nbexec.launch(entrypoint=script, output_dir=tmp_path, nproc=2,
                        overrides=[NO_TRACKING, "launch.stall_timeout=0", "launch.collective_timeout=3"])
    with pytest.raises(TrainingFailed) as info:
        run.result(timeout=180)

    cause = info.value.root_cause
    assert cause.rank == 1  # not rank 0, whose all_reduce timed out
    assert cause.where.endswith(f"stuck_allreduce.py:{_line_of(script, 'time.sleep(3600)')}")
    assert cause.message.startswith("was not in the collective that timed out: it was at ")
    assert "rank 0 timed out waiting for it in all_reduce" in cause.message
    assert "Timed out waiting 3000ms" in cause.message
    assert json.loads((run.run_dir / "result.json").read_text())["root_cause"]["rank"] == 1
    # the process group's timeout came from the config, through the child API
    assert "NBEXEC_COLLECTIVE_TIMEOUT=3" in (run.run_dir / "command.txt").read_text()
