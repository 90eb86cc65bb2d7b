"""The slurm scheduler against a real one-node Slurm cluster (munged, slurmctld, slurmd).

Jobs are the reference trainer and small gloo scripts, 2 processes each;
the run dir is on this machine's disk, which the "cluster" shares.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from runner.conftest import (  # tests/ is on sys.path (rootdir packages)
    SCRIPTS,
    wait_until,
)

from nbexec.errors import TrainingCancelled, TrainingFailed
from nbexec.executor import launch
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink

pytestmark = pytest.mark.slow
TINY = {
    "model": {"backbone": "tiny-encoder", "d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 320, "num_val": 64, "seq_len": 16},
}
SLURM = {"nproc": 2, "scheduler": "slurm", "slurm": {"cpus_per_task": 2, "time": "10"}}


class Recorder(Sink):
    """Keeps every line the sinks get, with when it came."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, object]] = []

    def on_lines(self, lines) -> None:
        self.lines.extend((time.time(), ln) for ln in lines)

    def texts(self, rank: int | None = 0) -> list[str]:
        return [ln.text for _, ln in self.lines if ln.rank == rank]


def _config(tmp_path: Path, **launch_keys: object) -> dict:
    return {**TINY, "data": {**TINY["data"], "path": str(tmp_path / "data")},
            "launch": {**SLURM, **launch_keys}, "output": {"dir": str(tmp_path / "runs")},
            "tracking": {"experiment": "slurm-tests"}}


def _mlflow_status(run_id: str) -> str:
    from nbexec.tracking.store import get_client

    return get_client(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status


def _job_processes(run_dir: Path) -> list[psutil.Process]:
    """Processes of the job: they carry its run dir in their environment or command line."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid():
                continue
            if proc.environ().get("NBEXEC_RUN_DIR") == str(run_dir) or str(run_dir) in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_reference_trainer_completes_with_streamed_logs_and_mlflow_finished(slurm_cluster, tmp_path):
    recorder = Recorder()
    run = launch(_config(tmp_path), sinks=[recorder])
    assert run.job_id is not None and run.job_id.isdigit()
    result = run.result(timeout=240)

    assert result.status is RunStatus.FINISHED and result.exit_code == 0
    assert run.scheduler_state == "COMPLETED"
    assert run.plan.run_dir.joinpath("slurm", "job.sbatch").read_text().startswith("#!/bin/bash")
    # rank 0's lines reached the sink from the job's log files, before the job was over
    texts = recorder.texts(0)
    assert any("2 process(es)" in t for t in texts), texts
    done_at = [t for t, ln in recorder.lines if ln.rank == 0 and "epoch 1/1 done" in ln.text]
    assert done_at and done_at[0] <= result.ended_at
    assert run.lines(0) and "training finished" in run.lines(0)[-1].text
    assert result.metrics["val_loss"] > 0 and result.checkpoint is not None
    assert (result.checkpoint / "trainer_state.json").exists() or any(result.checkpoint.iterdir())
    assert result.log_paths["rank0"].exists()
    assert result.mlflow_run_id is not None
    assert _mlflow_status(result.mlflow_run_id) == "FINISHED"


def test_cancel_mid_run_leaves_nothing_and_marks_killed(slurm_cluster, tmp_path):
    config = _config(tmp_path, entrypoint=str(SCRIPTS / "hang.py"))
    run = launch(config)
    # the job's lines stream while it runs: it never ends by itself
    wait_until(lambda: any("ready rank 1" in ln.text for ln in run.lines(1)), 120, "rank 1 ready")
    assert run.status is RunStatus.RUNNING and run.scheduler_state == "RUNNING"
    assert _job_processes(run.plan.run_dir), "the job's processes should be visible before cancel"
    run.cancel()
    run.cancel()  # idempotent
    assert run.status is RunStatus.KILLED
    assert run.scheduler_state == "CANCELLED"
    with pytest.raises(TrainingCancelled):
        run.result()
    assert _job_processes(run.plan.run_dir) == []
    assert run.tracking is not None and _mlflow_status(run.tracking.run_id) == "KILLED"


def test_failing_job_reports_its_root_cause(slurm_cluster, tmp_path):
    run = launch(_config(tmp_path, entrypoint=str(SCRIPTS / "fail_rank1.py")))
    with pytest.raises(TrainingFailed) as caught:
        run.result(timeout=240)
    cause = caught.value.root_cause
    assert cause.rank == 1 and cause.exc_type == "ValueError"
    assert "rank one exploded on batch 17" in cause.message
    assert run.status is RunStatus.FAILED and run.scheduler_state == "FAILED"
    assert "rank 1 line 4" in [ln.text for ln in run.lines(1)]
    assert run.tracking is not None and _mlflow_status(run.tracking.run_id) == "FAILED"


def test_a_job_slurm_refuses_says_why_and_ends_its_mlflow_run(slurm_cluster, tmp_path):
    from nbexec.errors import NbexecError

    config = _config(tmp_path)
    config["launch"]["slurm"] = {**config["launch"]["slurm"], "partition": "no-such-partition"}
    with pytest.raises(NbexecError) as caught:
        launch(config)
    assert "sbatch" in str(caught.value) and "partition" in str(caught.value).lower()
    from nbexec.tracking.store import get_client

    client = get_client(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("slurm-tests")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"
