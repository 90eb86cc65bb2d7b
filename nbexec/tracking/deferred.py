"""Open the job's MLflow run while the job starts, and hand it to the ranks when it is open.

In a fresh process, opening a run costs ~2.5 s here (importing mlflow and its
database layer), more than torchrun's whole start-up. So the launch only
checks that the store is reachable (fast, and still before anything is
spawned), and a thread opens the run while torchrun and the ranks start:

- every rank gets ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` in
  its environment at spawn, and a path to ``tracking.json``, which this
  module writes (atomically) once the run is open. The worker bootstrap waits
  for that file before the script runs and adds ``MLFLOW_RUN_ID`` and
  ``MLFLOW_EXPERIMENT_ID``. The script's own MLflow logging (Hugging Face's
  Trainer, accelerate, ``mlflow.*``) and nbexec's rank-0 logger
  (``metrics_from: rank0``) then log into this one run;
- with ``metrics_from: parent`` the metrics sink forwards rank 0's events once
  the run is open (earlier ones are sent at the end from ``events.jsonl``);
- the finalizer waits for the run, then ends it with the job's outcome;
- if opening fails after the job started, or MLflow does not answer within
  ``tracking.timeout`` seconds, ``tracking.json`` says so, the ranks go on
  without a run id, the job goes on untracked, and its result says so
  (``result.tracking``, no ``mlflow_run_id``). A run that opens after nbexec
  stopped waiting is ended FAILED at once, so it never stays RUNNING;
- ending the run is bounded by the same timeout: the job's outcome is never
  held up, or changed, by a store that hangs;
- with ``tracking.required: true`` the run is opened before anything is
  spawned instead, and a store that refuses it stops the launch.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import nbexec.contract as contract
from nbexec.errors import TrackingError
from nbexec.events import Event
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.tracking.tracked import TrackedRun

OPEN_TIMEOUT_S = 300.0  # only for callers reading the run; opening itself is bounded by tracking.timeout
# Inherited variables that would point a rank at another run or experiment than the job's.
_STALE_MLFLOW_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_PARENT_RUN_ID")


class DeferredTrackedRun:
    """A :class:`TrackedRun` being opened in the background; same reading API.

    Attributes:
        plan: the launch plan with the ranks' tracking environment added; launch this one.

    Raises (at construction):
        TrackingError: the store is unreachable (nothing has been spawned).
    """

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        open_first: bool = False,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> None:
        from nbexec.tracking.child_logger import ENV_CHILD_METRICS
        from nbexec.tracking.env import CREDENTIAL_VARS, store_env
        from nbexec.tracking.store import (
            check_store_reachable,
            normalize_tracking_uri,
            resolve_experiment,
            resolve_tracking_uri,
        )

        self.tracking_uri = normalize_tracking_uri(resolve_tracking_uri(config=plan.config))
        self.experiment_name = resolve_experiment(config=plan.config)
        check_store_reachable(self.tracking_uri)
        added = store_env(self.tracking_uri, self.experiment_name, base_env=plan.env)
        added[ENV_CHILD_METRICS] = "1" if plan.config.tracking.metrics_from == "rank0" else "0"
        added[contract.ENV_TRACKING_FILE] = str(plan.run_dir / contract.TRACKING_FILE)
        env = {k: v for k, v in plan.env.items() if k not in _STALE_MLFLOW_VARS}
        shown = {k: v for k, v in added.items() if k not in CREDENTIAL_VARS}
        self.plan = replace(plan, env={**env, **added}, env_set={**plan.env_set, **shown})
        self.timeout = plan.config.tracking.timeout
        self._parent_run_id, self._run_name, self._params, self._tags = parent_run_id, run_name, params, tags
        self._future: Future[TrackedRun] = Future()
        self._started = time.time()  # the run's start in MLflow is the job's, not when MLflow was ready
        self._opening = False
        self._lock = threading.Lock()
        if open_first or plan.config.tracking.required:  # before anything is spawned: TrackingError stops it
            self._open_in_background()
            try:
                tracked = self._future.result()  # set by the opening thread or, after tracking.timeout, _give_up
            except Exception as err:  # noqa: BLE001 - MLflow, SQLAlchemy, HTTP and timeouts alike
                why = "tracking.required: " if plan.config.tracking.required else ""
                raise TrackingError(
                    f"{why}the MLflow run could not be opened in {self.tracking_uri} "
                    f"({_reason(err)}); nothing was started"
                ) from err
            # Known before the job starts: the ranks get the run in their environment too
            # (they need not be able to read tracking.json, e.g. a job on other machines).
            self.plan = replace(self.plan, env={**self.plan.env, **_run_env(tracked)},
                                env_set={**self.plan.env_set, **_run_env(tracked)})

    def start_opening(self) -> None:
        """Open the run in a thread (call once the run dir exists); ``tracking.json`` follows.

        With ``tracking.required`` the run is open already: only ``tracking.json`` is written.
        """
        if self._opening:
            self._tell_ranks(_open_state(self._future.result(), self.experiment_name))
            return
        self._open_in_background()

    def _open_in_background(self) -> None:
        self._started = time.time()
        self._opening = True
        self._give_up_timer = threading.Timer(self.timeout, self._give_up)
        self._give_up_timer.daemon = True
        threading.Thread(target=self._open, name="nbexec-mlflow-open", daemon=True).start()
        self._give_up_timer.start()

    def _create(self) -> TrackedRun:
        from nbexec.tracking.create import create_training_mlflow_run

        return create_training_mlflow_run(
            plan=self.plan, tracking_uri=self.tracking_uri, experiment=self.experiment_name,
            start_time=self._started, parent_run_id=self._parent_run_id, run_name=self._run_name,
            params=self._params, tags=self._tags,
        )

    def _open(self) -> None:
        try:
            tracked = self._create()
        except BaseException as err:  # noqa: BLE001 - reported in the result
            with self._lock:
                if not self._future.done():
                    self._tell_ranks({"state": "untracked", "reason": _reason(err)})
                    self._future.set_exception(err)
            return
        with self._lock:
            late = self._future.done()  # _give_up came first
            if not late:
                self._give_up_timer.cancel()
                self._tell_ranks(_open_state(tracked, self.experiment_name))
        if late:  # nobody will end it: do it now, so it never stays RUNNING
            tracked.end("FAILED", failure=f"MLflow opened the run after nbexec stopped waiting ({self.timeout:g} s, "
                                          "tracking.timeout); the job ran untracked")
            return
        # While the job runs, and before its own run can be ended: runs earlier launchers on this
        # host left RUNNING when they died are ended (bounded: a slow store must not hold the job).
        housekeeping = threading.Thread(target=_end_abandoned_runs, args=(tracked,), daemon=True)
        housekeeping.start()
        housekeeping.join(self.timeout)
        self._future.set_result(tracked)

    def _give_up(self) -> None:
        with self._lock:
            if self._future.done():
                return
            err = TimeoutError(f"MLflow did not open the run within {self.timeout:g} s (tracking.timeout)")
            self._tell_ranks({"state": "untracked", "reason": str(err)})
            self._future.set_exception(err)

    def _tell_ranks(self, info: dict[str, Any]) -> None:
        """Write ``tracking.json`` whole (temp file + rename): a rank never reads half of it."""
        path = self.plan.run_dir / contract.TRACKING_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(info, indent=2))
            os.replace(tmp, path)
        except OSError:
            pass  # the run dir is gone: the job is over, or the ranks give up waiting

    def tracked(self, timeout: float | None = OPEN_TIMEOUT_S) -> TrackedRun | None:
        """The open run (waits for it), or None when it could not be (or was never) opened."""
        if not self._opening:
            return None
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

    def metrics_sink(self, *, trainer_metrics: bool = True) -> Sink:
        """See :meth:`TrackedRun.metrics_sink`; events before the run is open are sent from events.jsonl at the end."""
        return _DeferredMetricsSink(self, trainer_metrics=trainer_metrics)

    def stall_sink(self) -> Sink:
        """A runner sink that tags this run and logs the stacks when the job stalls (:mod:`.stall`)."""
        from nbexec.redact import Scrubber
        from nbexec.tracking.stall import StallSink

        def run() -> tuple[str, str] | None:
            tracked = self.tracked()
            return (tracked.run_id, tracked.tracking_uri) if tracked is not None else None

        plan = self.plan
        return StallSink(run, Scrubber.from_sources(plan.config.to_dict(), plan.env, argv=plan.argv))

    def finalize(self, result: TrainingResult) -> TrainingResult:
        """The finalizer: wait for the run, then end it from the job's result (bounded by ``tracking.timeout``).

        Never raises: a run that could not be opened, or a store that does not
        answer, gives ``result.tracking`` state ``untracked`` with the reason;
        the job's status is the job's.
        """
        from dataclasses import replace

        from nbexec.tracking.tracked import untracked

        try:
            tracked = self._future.result(OPEN_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the training outcome must not be lost
            return replace(result, tracking=untracked(f"its MLflow run could not be opened ({_reason(err)})"))
        ended: Future[TrainingResult] = Future()

        def finish() -> None:
            try:
                ended.set_result(tracked.finish(result))
            except BaseException as err:  # noqa: BLE001
                ended.set_exception(err)

        threading.Thread(target=finish, name="nbexec-mlflow-end", daemon=True).start()
        try:
            return ended.result(self.timeout)
        except Exception as err:  # noqa: BLE001 - a hung or failing store must not hold the result
            what = (f"MLflow did not answer within {self.timeout:g} s (tracking.timeout)"
                    if isinstance(err, TimeoutError) else _reason(err))
            return replace(result, tracking=untracked(
                f"MLflow run {tracked.run_id} could not be ended: {what}; it may show RUNNING"))

    def abort(self, error: BaseException) -> None:
        tracked = self.tracked()
        if tracked is not None:
            tracked.abort(error)

    def __repr__(self) -> str:
        if not self._opening:
            state = "not opened"
        else:
            state = "opening" if not self._future.done() else f"run {self.run_id}"
        return f"<DeferredTrackedRun {state}>"


def _end_abandoned_runs(tracked: TrackedRun) -> None:
    """End the runs earlier launchers on this host left RUNNING when they died (see tracking.abandoned)."""
    try:
        from nbexec.tracking.abandoned import mark_abandoned_runs
        from nbexec.tracking.store import get_client

        mark_abandoned_runs(get_client(tracked.tracking_uri))
    except Exception:  # noqa: BLE001 - housekeeping: never the job's problem
        pass


def _run_env(tracked: TrackedRun) -> dict[str, str]:
    """The run's id and experiment for the ranks' environment (the name only when it is the run's)."""
    env = {"MLFLOW_RUN_ID": tracked.run_id, "MLFLOW_EXPERIMENT_ID": str(tracked.experiment_id)}
    if str(tracked.experiment_id) == str(tracked.setup.experiment_id):
        env["MLFLOW_EXPERIMENT_NAME"] = tracked.setup.experiment_name
    return env


def _open_state(tracked: TrackedRun, experiment_name: str) -> dict[str, Any]:
    """What ``tracking.json`` tells the ranks about an open run."""
    from nbexec.tracking.store import uri_for_display

    return {"state": "open", "tracking_uri": uri_for_display(tracked.tracking_uri),
            "experiment_id": tracked.experiment_id, "experiment_name": experiment_name, "run_id": tracked.run_id}


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else repr(err)}"[:500]


class _DeferredMetricsSink(Sink):
    """Forwards metric events to the run's sink once the run is open."""

    wants_lines = False

    def __init__(self, deferred: DeferredTrackedRun, *, trainer_metrics: bool = True) -> None:
        self._deferred = deferred
        self._trainer_metrics = trainer_metrics
        self._sink: Sink | None = None

    def on_events(self, events: Sequence[Event]) -> None:
        if self._sink is None:
            future = self._deferred._future
            if not future.done() or future.exception() is not None:
                return  # sent from events.jsonl when the run ends
            self._sink = future.result().metrics_sink(trainer_metrics=self._trainer_metrics)
        self._sink.on_events(events)
