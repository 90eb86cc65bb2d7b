"""The ranks' resource use lands in the MLflow run as system metrics (the names MLflow's own monitor uses)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import nbexec
from nbexec.tracking.sink import MlflowMetricsSink, system_metrics

SAMPLE = {
    "kind": "resources", "time": 1_800_000_000.0, "sample": 3, "source": "parent",
    "ranks": {"0": {"pid": 11, "cpu_percent": 97.5, "rss_bytes": 412_000_000.0,
                    "gpu": 0, "gpu_util_percent": 88.0, "gpu_memory_bytes": 3_200_000_000.0},
              "1": {"pid": 12, "cpu_percent": None, "rss_bytes": 400_000_000.0}},
    "host": {"cpu_percent": 99.0, "memory_used_bytes": 6e9, "memory_total_bytes": 24e9},
}
SLEEPY = "import time\ntime.sleep(5)\n"


def test_a_sample_as_mlflow_system_metrics() -> None:
    assert system_metrics(SAMPLE) == {
        "system/cpu_utilization_percentage": 99.0,
        "system/system_memory_usage_megabytes": 6000.0,
        "system/system_memory_usage_percentage": 25.0,
        "system/rank_0/cpu_utilization_percentage": 97.5,
        "system/rank_0/memory_rss_megabytes": 412.0,
        "system/rank_0/gpu_utilization_percentage": 88.0,
        "system/rank_0/gpu_memory_usage_megabytes": 3200.0,
        "system/rank_1/memory_rss_megabytes": 400.0,  # no CPU figure yet: nothing logged for it
    }


def test_the_sink_logs_samples_even_when_rank0_logs_the_trainers_metrics(store_uri: str, client) -> None:  # noqa: ANN001
    run_id = client.create_run(client.create_experiment("sys")).info.run_id
    sink = MlflowMetricsSink(run_id, tracking_uri=store_uri, trainer_metrics=False, flush_interval_s=0.05)
    sink.on_events([SAMPLE, {"kind": "metrics", "rank": 0, "step": 1, "metrics": {"loss": 1.0}}])
    sink.close()
    history = client.get_metric_history(run_id, "system/rank_0/cpu_utilization_percentage")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(3, 97.5, 1_800_000_000_000)]
    assert "loss" not in client.get_run(run_id).data.metrics, "rank 0 logs those itself"


@pytest.mark.slow
def test_a_launched_job_records_each_ranks_use(store_uri: str, client, tmp_path: Path) -> None:  # noqa: ANN001
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY)
    run = nbexec.launch({"tracking": {"uri": store_uri, "experiment": "sys"}}, entrypoint=script,
                        output_dir=tmp_path / "out", nproc=2)
    seen = None
    deadline = time.monotonic() + 120  # guards a hang only
    while seen is None and not run.done() and time.monotonic() < deadline:
        seen = run.resources  # the view shows the same samples
        time.sleep(0.05)
    result = run.result(timeout=120)
    assert seen is not None and set(seen["ranks"]) == {"0", "1"}, "both ranks measured while they ran"
    assert all(use["rss_bytes"] > 0 for use in seen["ranks"].values())
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    for rank in (0, 1):
        assert metrics[f"system/rank_{rank}/memory_rss_megabytes"] > 1
    assert 0 <= metrics["system/cpu_utilization_percentage"]
    assert not [e for e in run.events if e.get("kind") == "resources"], "kept in MLflow, not in run.events"
