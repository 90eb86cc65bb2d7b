"""Parent side: live metrics in MLflow from the events the parent already reads, at no cost to training.

    tracked = create_training_mlflow_run(plan=plan)
    sink = tracked.metrics_sink()                       # a runner Sink
    run = TrainingRun(plan, sinks=[..., sink], finalizers=[tracking_finalizer(tracked)])

The sink feeds rank 0's ``metrics`` events to a :class:`MetricsLogger` in the
parent process, and the ranks' resource use (the parent's ``resources``
events, :mod:`nbexec.runner.resources`) as MLflow *system metrics*: the
``system/`` names MLflow's own monitor uses, so they show in the run's
"System metrics" tab. MLflow's monitor measures only the process it runs in;
these are per rank (``system/rank_0/cpu_utilization_percentage``...) plus the
host (``system/cpu_utilization_percentage``...), one step per sample. The training processes only write ``events.jsonl``, as they
do anyway: no mlflow import, no logging thread, no GIL contention in them.
:meth:`TrackedRun.finish` closes the sink before it logs what is missing, so
no value is sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nbexec.events import Event
from nbexec.runner.sinks import Sink
from nbexec.tracking.child_logger import MetricsLogger


class MlflowMetricsSink(Sink):
    """Forwards rank 0's metric events and the resource samples to an MLflow run, batched, from a background thread.

    Args:
        run_id, tracking_uri: the run to log into.
        trainer_metrics: log the trainer's metric events (False: only system metrics).
        **options: as for :class:`MetricsLogger` (flush interval, batch size).
    """

    wants_lines = False  # metrics come from events; lines need not even be decoded

    def __init__(self, run_id: str, *, tracking_uri: str, trainer_metrics: bool = True, **options: Any) -> None:
        self.logger = MetricsLogger(run_id, tracking_uri=tracking_uri, **options)
        self.trainer_metrics = trainer_metrics

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.get("kind") == "resources":
                sample = ev.get("sample")
                stamp = ev.get("time")
                self.logger.log(system_metrics(ev), step=sample if isinstance(sample, int) else None,
                                timestamp=stamp if isinstance(stamp, (int, float)) else None)
                continue
            if not self.trainer_metrics:
                continue
            values = ev.get("metrics")
            if ev.get("kind") != "metrics" or ev.get("rank", 0) not in (0, None) or not isinstance(values, dict):
                continue
            step = ev.get("step")
            stamp = ev.get("time")
            self.logger.log(
                {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                step=step if isinstance(step, int) else None,
                timestamp=stamp if isinstance(stamp, (int, float)) else None,
            )

    def close(self, timeout: float = 30.0) -> None:
        """Send what was received and stop; later events are ignored. Idempotent."""
        self.logger.close(timeout)


MB = 1e6  # MLflow's system metrics are in (decimal) megabytes


def system_metrics(sample: Mapping[str, Any]) -> dict[str, float]:
    """A ``resources`` event as MLflow system metrics (names as MLflow's own monitor writes them)."""
    out: dict[str, float] = {}

    def put(name: str, value: object, scale: float = 1.0) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = round(float(value) / scale, 1)

    host = sample.get("host") or {}
    put("system/cpu_utilization_percentage", host.get("cpu_percent"))
    put("system/system_memory_usage_megabytes", host.get("memory_used_bytes"), MB)
    used, total = host.get("memory_used_bytes"), host.get("memory_total_bytes")
    if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total > 0:
        put("system/system_memory_usage_percentage", used / total * 100)
    for rank, use in (sample.get("ranks") or {}).items():
        prefix = f"system/rank_{rank}/"
        put(prefix + "cpu_utilization_percentage", use.get("cpu_percent"))
        put(prefix + "memory_rss_megabytes", use.get("rss_bytes"), MB)
        put(prefix + "gpu_utilization_percentage", use.get("gpu_util_percent"))
        put(prefix + "gpu_memory_usage_megabytes", use.get("gpu_memory_bytes"), MB)
    return out
