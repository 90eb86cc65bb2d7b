"""Open the job's MLflow run while the job starts, not before it.

In a fresh process, opening a run costs ~2.5 s here (importing mlflow and its
database layer), more than torchrun's whole start-up. When the parent logs the
metrics (``tracking.metrics_from: parent``, the default) the ranks never need
the run id, so the launch only checks that the store is reachable (fast, and
still before anything is spawned) and a thread opens the run meanwhile:

- the metrics sink forwards events once the run is open (earlier ones are
  sent at the end from ``events.jsonl``: nothing is lost);
- the finalizer waits for the run, then ends it with the job's outcome;
- if opening fails after the job started, the job goes on untracked, with a
  warning, and its result says so (no ``mlflow_run_id``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from nbexec.errors import TrackingError
from nbexec.events import Event
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.tracking.run import TrackedRun

OPEN_TIMEOUT_S = 300.0


class DeferredTrackedRun:
    """A :class:`TrackedRun` being opened in the background; same reading API.

    Raises (at construction):
        TrackingError: the store is unreachable (nothing has been spawned).
    """

    def __init__(self, plan: LaunchPlan) -> None:
        from nbexec.tracking.store import check_store_reachable, normalize_tracking_uri, resolve_tracking_uri

        check_store_reachable(normalize_tracking_uri(resolve_tracking_uri(config=plan.config)))
        self._future: Future[TrackedRun] = Future()
        self._started = time.time()  # the run's start in MLflow is the job's, not when MLflow was ready
        threading.Thread(target=self._open, args=(plan,), name="nbexec-mlflow-open", daemon=True).start()

    def _open(self, plan: LaunchPlan) -> None:
        try:
            from nbexec.tracking.create import create_training_mlflow_run

            self._future.set_result(create_training_mlflow_run(plan=plan, start_time=self._started))
        except BaseException as err:  # noqa: BLE001 - reported by finalize()
            self._future.set_exception(err)

    def tracked(self, timeout: float | None = OPEN_TIMEOUT_S) -> TrackedRun | None:
        """The open run (waits for it), or None when it could not be opened."""
        try:
            return self._future.result(timeout)
        except Exception:  # noqa: BLE001
            return None

    @property
    def run_id(self) -> str | None:
        tracked = self.tracked()
        return tracked.run_id if tracked else None

    @property
    def setup(self) -> Any:
        tracked = self.tracked()
        return tracked.setup if tracked else None

    def where(self) -> str:
        tracked = self.tracked()
        return tracked.where() if tracked else "not tracked (the MLflow run could not be opened)"

    def metrics_sink(self) -> Sink:
        return _DeferredMetricsSink(self)

    def finalize(self, result: TrainingResult) -> TrainingResult:
        """The finalizer: wait for the run, then end it from the job's result."""
        try:
            tracked = self._future.result(OPEN_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the training outcome must not be lost
            # Raised to the run handle, which keeps the result as it is and shows this
            # as an "nbexec:" line wherever the job's lines go (cell view, terminal).
            raise TrackingError(f"the job ran untracked: its MLflow run could not be opened ({err})") from err
        return tracked.finish(result)

    def abort(self, error: BaseException) -> None:
        tracked = self.tracked()
        if tracked is not None:
            tracked.abort(error)

    def __repr__(self) -> str:
        state = "opening" if not self._future.done() else f"run {self.run_id}"
        return f"<DeferredTrackedRun {state}>"


class _DeferredMetricsSink(Sink):
    """Forwards metric events to the run's sink once the run is open."""

    wants_lines = False

    def __init__(self, deferred: DeferredTrackedRun) -> None:
        self._deferred = deferred
        self._sink: Sink | None = None

    def on_events(self, events: Sequence[Event]) -> None:
        if self._sink is None:
            future = self._deferred._future
            if not future.done() or future.exception() is not None:
                return  # sent from events.jsonl when the run ends
            self._sink = future.result().metrics_sink()
        self._sink.on_events(events)
