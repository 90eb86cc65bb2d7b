"""Parent side: live metrics in MLflow from the events the parent already reads, at no cost to training.

    tracked = create_training_mlflow_run(plan=plan)
    sink = tracked.metrics_sink()                       # a runner Sink
    run = TrainingRun(plan, sinks=[..., sink], finalizers=[tracking_finalizer(tracked)])

The sink feeds rank 0's ``metrics`` events to a :class:`MetricsLogger` in the
parent process. The training processes only write ``events.jsonl``, as they
do anyway: no mlflow import, no logging thread, no GIL contention in them.
:meth:`TrackedRun.finish` closes the sink before it logs what is missing, so
no value is sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbexec.events import Event
from nbexec.runner.sinks import Sink
from nbexec.tracking.child_logger import MetricsLogger


class MlflowMetricsSink(Sink):
    """Forwards rank 0's metric events to an MLflow run, batched, from a background thread.

    Args:
        run_id, tracking_uri: the run to log into.
        **options: as for :class:`MetricsLogger` (flush interval, batch size).
    """

    wants_lines = False  # metrics come from events; lines need not even be decoded

    def __init__(self, run_id: str, *, tracking_uri: str, **options: Any) -> None:
        self.logger = MetricsLogger(run_id, tracking_uri=tracking_uri, **options)

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
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
