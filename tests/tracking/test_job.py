"""A real 2-rank torchrun job tracked end to end: run opened before spawn, rank 0 logs, the finalizer closes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nbexec.config import load_config
from nbexec.errors import TrainingFailed
from nbexec.executor import launch
from nbexec.plan import plan_training
from nbexec.result import TrainingResult
from nbexec.tracking import create_training_mlflow_run, tracking_finalizer, with_tracking_env

from .conftest import history

SCRIPT = Path(__file__).resolve().parent / "scripts" / "log_metrics.py"
STEPS = 40


def run_job(store_uri: str, tmp_path: Path, machine: Callable[..., object], *args: str,  # noqa: ANN202
            parent_logs_metrics: bool = False):
    """Wire tracking by hand, as launch() does, to choose who logs the metrics.

    ``tracking.enabled: false`` keeps launch() from opening a second run.
    """
    config = load_config({
        "launch": {"entrypoint": str(SCRIPT), "nproc": 2, "backend": "gloo", "args": [str(STEPS), *args]},
        "tracking": {"experiment": "jobs", "enabled": False},
    })
    plan = plan_training(config, output_dir=tmp_path / "outputs", run_name="job", hardware=machine(cpus=2))
    tracked = create_training_mlflow_run(plan=plan, tracking_uri=store_uri)
    sinks = [tracked.metrics_sink()] if parent_logs_metrics else []
    handle = launch(
        plan=with_tracking_env(plan, tracked, child_metrics=not parent_logs_metrics),
        sinks=sinks,
        finalizers=[tracking_finalizer(tracked)],
    )
    handle.wait(timeout=240)
    return tracked, handle


@pytest.mark.slow
@pytest.mark.parametrize("parent_logs_metrics", [False, True], ids=["rank0-logs", "parent-logs"])
def test_finished_job_is_one_run_with_rank0_metrics(store_uri: str, client, tmp_path: Path,  # noqa: ANN001
                                                    machine: Callable[..., object],
                                                    parent_logs_metrics: bool) -> None:
    tracked, handle = run_job(store_uri, tmp_path, machine, parent_logs_metrics=parent_logs_metrics)
    result = handle.result()
    assert result.mlflow_run_id == tracked.run_id
    assert TrainingResult.load(result.run_dir).mlflow_run_id == tracked.run_id
    runs = client.search_runs([tracked.experiment_id])
    assert [r.info.run_id for r in runs] == [tracked.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["nbexec.child_logged"] == "true"
    assert run.data.tags["nbexec.world_size"] == "2"
    assert history(client, tracked.run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(STEPS)]  # no duplicates
    rank0_log = (result.run_dir / "logs" / "rank0.log").read_text()
    assert f"mlflow child logging {'off' if parent_logs_metrics else 'on'}" in rank0_log
    artifacts = {a.path for a in client.list_artifacts(tracked.run_id)}
    assert {"config.yaml", "command.txt", "events.jsonl", "result.json", "logs"} <= artifacts
    logs = {a.path for a in client.list_artifacts(tracked.run_id, "logs")}
    assert {"logs/rank0.log", "logs/rank1.log"} <= logs


@pytest.mark.slow
def test_failure_on_rank_1_ends_failed_with_the_root_cause(store_uri: str, client, tmp_path: Path,  # noqa: ANN001
                                                           machine: Callable[..., object]) -> None:
    tracked, handle = run_job(store_uri, tmp_path, machine, "1")
    with pytest.raises(TrainingFailed):
        handle.result()
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FAILED"
    assert "rank 1" in run.data.tags["nbexec.failure"]
    assert "RuntimeError: boom on purpose" in run.data.tags["nbexec.failure"]
    assert "boom on purpose" in run.data.tags["mlflow.note.content"]
    logs = {a.path for a in client.list_artifacts(tracked.run_id, "logs")}
    assert "logs/rank1.log" in logs
