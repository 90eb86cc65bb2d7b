"""What adding a backend takes: one Scheduler subclass and one registration, nothing else.

The backend here runs the job's script once, in a plain subprocess (no
torchrun), as ``launch.scheduler: subprocess``. Everything else is nbexec's
one path, unchanged: planning, the run dir, the run handle, the streamed
lines, the MLflow run, ``result.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nbexec
from nbexec.errors import RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.runner.job import PumpFeed
from nbexec.runner.streams import LogPump
from nbexec.schedulers import _registered, register
from nbexec.schedulers.api import Scheduler

SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "scripts"


# --- the whole backend ------------------------------------------------------------------


class SubprocessJob:
    job_id = None
    state = None

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.pid = proc, proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self) -> int:
        return self.proc.wait()

    def stop(self, grace: float) -> None:
        self.proc.terminate()
        self.proc.wait()

    def outcome(self, exit_code: int, cancelled: bool) -> tuple[RunStatus, RootCause | None]:
        if cancelled:
            return RunStatus.KILLED, None
        if exit_code == 0:
            return RunStatus.FINISHED, None
        return RunStatus.FAILED, RootCause(rank=0, exit_code=exit_code, message=f"the script exited {exit_code}")


class SubprocessLauncher:
    def start(self, plan: LaunchPlan, feed: PumpFeed) -> tuple[SubprocessJob, LogPump]:
        pump = LogPump(plan.run_dir, feed.dispatcher, on_events=feed.on_events,
                       on_text_progress=feed.on_text_progress, scrubber=feed.scrubber)
        launch = plan.config.launch
        target = [launch.entrypoint] if launch.entrypoint else ["-m", str(launch.target_module)]
        env = {**plan.env, **pump.child_env(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "nbexec.child.bootstrap", *target, *launch.args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pump.attach_pipe(proc.stdout, "stdout")  # type: ignore[arg-type]
        pump.attach_pipe(proc.stderr, "stderr")  # type: ignore[arg-type]
        return SubprocessJob(proc), pump


class SubprocessScheduler(Scheduler):
    name = "subprocess"

    def launcher(self, plan: LaunchPlan) -> SubprocessLauncher:
        return SubprocessLauncher()


# --- using it ---------------------------------------------------------------------------


@pytest.fixture
def subprocess_backend():  # noqa: ANN201
    register("subprocess", SubprocessScheduler)
    yield
    _registered.pop("subprocess", None)


def test_a_registered_backend_runs_jobs_through_nbexecs_one_path(tmp_path, subprocess_backend, session_tracking_store):
    run = nbexec.launch(entrypoint=SCRIPTS / "ok.py", output_dir=tmp_path, nproc=1,
                        overrides=["launch.scheduler=subprocess"])
    result = run.result(timeout=120)

    assert result.status is RunStatus.FINISHED
    assert "torch.distributed.run" in " ".join(result.command)  # the plan is nbexec's; the backend ran it its way
    assert any("step" in ln.text for ln in run.lines(0))  # rank 0's lines, streamed by the same pump
    saved = json.loads((tmp_path / run.name / "result.json").read_text())
    assert saved["status"] == "FINISHED" and saved["tracking"]["state"] == "tracked"
    from mlflow.tracking import MlflowClient

    assert MlflowClient(session_tracking_store).get_run(result.mlflow_run_id).info.status == "FINISHED"


def test_a_failing_job_of_the_backend_is_a_training_failure(tmp_path, subprocess_backend):
    script = tmp_path / "boom.py"
    script.write_text("raise SystemExit(3)\n")
    run = nbexec.launch(entrypoint=script, output_dir=tmp_path / "runs", nproc=1,
                        overrides=["launch.scheduler=subprocess", "tracking.enabled=false"])
    with pytest.raises(nbexec.TrainingFailed) as caught:
        run.result(timeout=120)
    assert caught.value.root_cause.message == "the script exited 3"  # the backend's own outcome table
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == "FAILED"
