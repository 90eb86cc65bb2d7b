"""MlflowMetricsSink: the parent logs rank 0's metric events live; finish() adds only what it missed."""

from __future__ import annotations

import time

from nbexec.config import TrainingConfig
from nbexec.events import read_events
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.tracking import MetricsLogger, create_training_mlflow_run, tracking_finalizer, with_tracking_env

from .conftest import finished_run_dir, history


def test_sink_logs_events_and_finish_adds_only_the_rest(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                                        plan: LaunchPlan) -> None:
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    sink = tracked.metrics_sink(flush_interval_s=0.05)
    result = finished_run_dir(plan, RunStatus.FINISHED, steps=6)
    events = read_events(plan.events_path)
    metric_events = [e for e in events if e["kind"] == "metrics"]
    sink.on_events(events[: 2 * 3])  # the first three steps arrived while the job ran (with progress events)
    sink.on_events([{**metric_events[0], "rank": 1}])  # another rank's event is not rank 0's metrics
    deadline = time.monotonic() + 120  # guards a hang only
    # MLflow's log_batch commits the metrics and the tags in separate transactions: wait for both.
    while time.monotonic() < deadline and not (
        len(client.get_metric_history(tracked.run_id, "loss")) >= 3
        and "nbexec.child_logged" in client.get_run(tracked.run_id).data.tags
    ):
        time.sleep(0.05)
    assert [s for s, _ in history(client, tracked.run_id, "loss")] == [0, 10, 20]
    run_tags = client.get_run(tracked.run_id).data.tags
    assert run_tags["nbexec.child_logged"] == "true"

    tracking_finalizer(tracked)(result)
    sink.on_events(events)  # late deliveries after the end are ignored
    assert history(client, tracked.run_id, "loss") == [(s * 10, 1.0 / (s + 1)) for s in range(6)]
    assert [s for s, _ in history(client, tracked.run_id, "lr")] == [0, 10, 20, 30, 40, 50]
    assert history(client, tracked.run_id, "eval/f1") == [(60, 0.5)]
    stamps = {m.timestamp for m in client.get_metric_history(tracked.run_id, "loss")}
    assert stamps == {int(e["time"] * 1000) for e in metric_events if "loss" in e["metrics"]}


def test_child_metrics_can_be_turned_off(store_uri: str, plan: LaunchPlan) -> None:
    tracked = create_training_mlflow_run(plan=plan, tracking_uri=store_uri)
    on = with_tracking_env(plan, tracked)
    off = with_tracking_env(plan, tracked, child_metrics=False)
    assert on.env["NBEXEC_MLFLOW_CHILD_METRICS"] == "1"
    assert off.env["NBEXEC_MLFLOW_CHILD_METRICS"] == "0"
    rank0 = {"RANK": "0"}
    logger = MetricsLogger.from_env({**on.env, **rank0})
    assert logger is not None
    logger.close()
    assert MetricsLogger.from_env({**off.env, **rank0}) is None
