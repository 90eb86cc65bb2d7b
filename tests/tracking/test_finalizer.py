"""tracking_finalizer: status from the result, metric history from events.jsonl, artifacts, a store that went away."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nbexec.config import TrainingConfig
from nbexec.errors import RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.tracking import (
    TrackedRun,
    TrackingSetup,
    TrackingWarning,
    create_training_mlflow_run,
    tracking_finalizer,
)

from .conftest import ENV_SECRET, SECRET, finished_run_dir, free_port, history


def artifact_files(client, run_id: str) -> dict[str, str]:  # noqa: ANN001
    root = Path(urlparse(client.get_run(run_id).info.artifact_uri).path)
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_finished_job(store_uri: str, client, config: TrainingConfig, plan: LaunchPlan,  # noqa: ANN001
                      log_batch_calls: list[dict[str, int]]) -> None:
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    result = finished_run_dir(plan, RunStatus.FINISHED, steps=5)
    log_batch_calls.clear()
    amended = tracking_finalizer(tracked)(result)

    assert amended.mlflow_run_id == tracked.run_id
    assert amended.status is RunStatus.FINISHED and amended.metrics == result.metrics
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.end_time == int(result.ended_at * 1000)
    tags = run.data.tags
    assert tags["nbexec.status"] == "FINISHED"
    assert tags["nbexec.exit_code"] == "0"
    assert tags["nbexec.world_size"] == "2"
    assert "nbexec.failure" not in tags
    # the whole history, with the trainer's steps, in one log_batch call
    assert history(client, tracked.run_id, "loss") == [(s * 10, 1.0 / (s + 1)) for s in range(5)]
    assert history(client, tracked.run_id, "lr") == [(s * 10, 0.001) for s in range(5)]
    assert history(client, tracked.run_id, "eval/f1") == [(50, 0.5)]
    assert [c["metrics"] for c in log_batch_calls if c["metrics"]] == [11]
    # artifacts: the run dir's files, result.json from the amended result
    files = artifact_files(client, tracked.run_id)
    assert sorted(files) == ["command.txt", "config.yaml", "events.jsonl", "logs/rank0.log",
                             "logs/rank1.log", "result.json"]
    uploaded = json.loads(files["result.json"])
    assert uploaded["status"] == "FINISHED" and uploaded["mlflow_run_id"] == tracked.run_id
    assert files["events.jsonl"] == plan.events_path.read_text()
    assert "***REDACTED***" in files["logs/rank0.log"]
    assert SECRET not in files["logs/rank0.log"] and ENV_SECRET not in files["logs/rank0.log"]


def test_failed_job_has_the_root_cause(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                       plan: LaunchPlan) -> None:
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    cause = RootCause(
        rank=1, exit_code=1, exc_type="ValueError", message="labels out of range",
        traceback='Traceback (most recent call last):\n  File "train.py", line 9\nValueError: labels out of range',
    )
    result = finished_run_dir(plan, RunStatus.FAILED, root_cause=cause)
    amended = tracking_finalizer(tracked)(result)

    assert amended.mlflow_run_id == tracked.run_id
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FAILED"
    headline = "rank 1 failed (exit code 1): ValueError: labels out of range"
    assert run.data.tags["nbexec.failure"] == headline
    assert run.data.tags["nbexec.failed_rank"] == "1"
    assert run.data.tags["nbexec.exit_code"] == "1"
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**FAILED**: {headline}")
    assert 'File "train.py", line 9' in note and str(plan.log_dir / "rank1.log") in note
    assert {"logs/rank0.log", "logs/rank1.log"} <= set(artifact_files(client, tracked.run_id))


def test_killed_job(store_uri: str, client, config: TrainingConfig, plan: LaunchPlan) -> None:  # noqa: ANN001
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    amended = tracking_finalizer(tracked)(finished_run_dir(plan, RunStatus.KILLED, steps=2))
    run = client.get_run(tracked.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["nbexec.status"] == "KILLED"
    assert run.data.tags["nbexec.failure"].startswith("cancelled")
    assert amended.mlflow_run_id == tracked.run_id
    assert "logs/rank0.log" in artifact_files(client, tracked.run_id)


def test_only_what_the_child_missed_is_logged(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                              plan: LaunchPlan) -> None:
    from mlflow.entities import Metric, RunTag

    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    result = finished_run_dir(plan, RunStatus.FINISHED, steps=5)
    # the child logged steps 0 and 10, then its store went away
    client.log_batch(
        tracked.run_id,
        metrics=[Metric(k, v, 0, s) for s in (0, 10) for k, v in (("loss", 1.0 / (s // 10 + 1)), ("lr", 0.001))],
        tags=[RunTag("nbexec.child_logged", "true")],
    )
    tracking_finalizer(tracked)(result)
    assert history(client, tracked.run_id, "loss") == [(s * 10, 1.0 / (s + 1)) for s in range(5)]
    assert [s for s, _ in history(client, tracked.run_id, "lr")] == [0, 10, 20, 30, 40]


def test_finalizing_twice_logs_once(store_uri: str, client, config: TrainingConfig, plan: LaunchPlan) -> None:  # noqa: ANN001
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    result = finished_run_dir(plan, RunStatus.FINISHED, steps=3)
    first = tracked.finish(result)
    second = tracked.finish(result)
    assert first == second
    assert len(history(client, tracked.run_id, "loss")) == 3


def test_deleted_store_warns_and_keeps_the_result(store_uri: str, config: TrainingConfig,
                                                  plan: LaunchPlan) -> None:
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    result = finished_run_dir(plan, RunStatus.FINISHED)
    Path(store_uri[len("sqlite:///") :]).unlink()
    with pytest.warns(TrackingWarning, match="no longer exists"):
        amended = tracking_finalizer(tracked)(result)
    assert replace(amended, tracking=None) == result  # the outcome is kept
    assert amended.mlflow_run_id is None
    assert amended.untracked_reason and "no longer exists" in amended.untracked_reason  # and says it
    assert not Path(store_uri[len("sqlite:///") :]).exists()  # no empty database made in its place


def test_unreachable_server_warns_and_keeps_the_result(config: TrainingConfig, plan: LaunchPlan) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    setup = TrackingSetup(uri, "1", "tests", None, f"{uri}/#/experiments/1")
    tracked = TrackedRun(setup=setup, run_id="0123456789abcdef", experiment_id="1", config=config, plan=plan)
    result = finished_run_dir(plan, RunStatus.FAILED, root_cause=RootCause(rank=0, exit_code=1, message="x"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amended = tracking_finalizer(tracked)(result)
    assert replace(amended, tracking=None) == result and amended.untracked_reason
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(messages) == 1
    assert uri in messages[0] and "not reachable" in messages[0] and str(plan.run_dir) in messages[0]
