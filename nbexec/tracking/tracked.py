"""The open MLflow run of a training job, and how it ends: from the job's result or from an exception.

    tracked = create_training_mlflow_run(plan.config, plan=plan)   # before spawning
    plan = with_tracking_env(plan, tracked)                          # the child logs into it
    run = TrainingRun(plan, finalizers=[tracking_finalizer(tracked)])

or, around code that runs a job to the end::

    with create_training_mlflow_run(config, run_name="ner-1") as tracked:
        ...                      # FAILED if this raises, KILLED on Ctrl-C
        tracked.end(result)      # metrics, artifacts, status from the result
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from nbexec.errors import TrainingCancelled, TrainingFailed
from nbexec.redact import Scrubber
from nbexec.result import RunStatus, TrainingResult
from nbexec.tracking.batching import MAX_TAG_VALUE, log_batch_chunked, mlflow_key, truncate
from nbexec.tracking.store import TrackingSetup, TrackingWarning, get_client, store_gone
from nbexec.tracking.tags import TAG_FAILURE, TAG_NOTE, result_tags

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.plan import LaunchPlan
    from nbexec.runner.handle import Finalizer
    from nbexec.tracking.sink import MlflowMetricsSink


class TrackedRun:
    """An open MLflow run for one training job (or one HPO trial).

    Attributes:
        run_id, experiment_id, tracking_uri: where it lives.
        setup: the :class:`~nbexec.tracking.store.TrackingSetup` it was made with.
        status: None while open, then the final :class:`~nbexec.result.RunStatus`.
    """

    def __init__(
        self,
        *,
        setup: TrackingSetup,
        run_id: str,
        experiment_id: str,
        run_name: str | None = None,
        config: TrainingConfig | None = None,
        plan: LaunchPlan | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.setup = setup
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.config = config
        self.plan = plan
        self.status: RunStatus | None = None
        self._scrubber = scrubber or Scrubber.from_sources(config.to_dict() if config is not None else None)
        self._lock = threading.Lock()
        self._sinks: list[MlflowMetricsSink] = []

    @property
    def tracking_uri(self) -> str:
        return self.setup.tracking_uri

    @property
    def ended(self) -> bool:
        return self.status is not None

    def where(self) -> str:
        """Where to open this run (its URL, or the ``mlflow ui`` command)."""
        return self.setup.where(self.run_id, self.experiment_id)

    def metrics_sink(self, *, trainer_metrics: bool = True, **options: Any) -> MlflowMetricsSink:
        """A runner sink that logs rank 0's metric events, and the ranks' resource use, into this run.

        :meth:`finish` closes it before logging what is missing. Launch with
        ``with_tracking_env(plan, run, child_metrics=False)`` so rank 0 does
        not log the same values.

        Args:
            trainer_metrics: log the trainer's metric events too (False: rank 0 logs them itself;
                the sink logs only the system metrics).
        """
        from nbexec.tracking.sink import MlflowMetricsSink

        sink = MlflowMetricsSink(self.run_id, tracking_uri=self.tracking_uri, trainer_metrics=trainer_metrics,
                                 **options)
        self._sinks.append(sink)
        return sink

    def env(self, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child environment variables for this run (see ``setup_mlflow_tracking_env``)."""
        from nbexec.tracking.env import setup_mlflow_tracking_env

        return setup_mlflow_tracking_env(self, base_env=base_env)

    # --- ending -----------------------------------------------------------------

    def finish(self, result: TrainingResult) -> TrainingResult:
        """End the run from a job's result; the body of :func:`tracking_finalizer`.

        Logs the metric history the child did not, reads back every metric in
        the run (also those the script logged itself), uploads the run dir's
        files, ends runs a rank left RUNNING under it, sets the outcome tags
        and the status matching ``result.status``.
        Never raises: a failing store gives a :class:`TrackingWarning` and the
        result comes back unchanged (without ``mlflow_run_id``).

        Returns:
            ``result`` with ``mlflow_run_id`` set once the run's status is set,
            and the run's metrics added to ``result.metrics``.
        """
        with self._lock:
            if self.ended:
                return replace(result, mlflow_run_id=self.run_id, tracking=self._state())
            gone = store_gone(self.tracking_uri)
            for sink in self._sinks:  # what it still holds is sent now; the rest comes from events.jsonl
                sink.close(timeout=1.0 if gone else 30.0)
            if gone:
                self._warn(f"the store is gone ({gone})", result.run_dir)
                return replace(result, tracking=untracked(f"the MLflow store is gone ({gone})"))
            from nbexec.tracking.finish import (
                end_nested_runs,
                failure_note,
                log_metric_history,
                logged_metrics,
                nested_runs,
                upload_artifacts,
            )

            client = get_client(self.tracking_uri)
            problems: list[str] = []
            extra: dict[str, object] = {}
            if result.status is not RunStatus.FINISHED:
                headline = _result_headline(result)
                rc = result.root_cause
                extra[TAG_FAILURE] = headline
                extra[TAG_NOTE] = failure_note(
                    result.status.value, headline, self._scrubber,
                    traceback=rc.traceback if rc else "", run_dir=result.run_dir,
                    log_paths=sorted(result.log_paths.items()),
                )
            def attempt(what: str, step: Any) -> Any:
                try:
                    return step()
                except Exception as err:  # noqa: BLE001 - the outcome must not be lost
                    problems.append(f"{what}: {one_line(err)}")
                    return None

            attempt("metrics", lambda: log_metric_history(client, self.run_id, result))
            nested = attempt("nested runs", lambda: nested_runs(client, self.run_id, self.experiment_id)) or []
            # what the script logged itself (HF Trainer, mlflow.log_metric, Lightning) is the job's too
            logged = attempt("reading metrics back", lambda: logged_metrics(client, self.run_id, nested))
            if logged:
                result = replace(result, metrics={**result.metrics,
                                                  **{k: v for k, v in logged.items() if k not in result.metrics}})
            # only how it ended: the launch-time tags (git commit...) describe what ran
            attempt("tags", lambda: self._log_tags(client, {**result_tags(result), **extra}))
            attempt("artifacts", lambda: upload_artifacts(client, self.run_id, result.run_dir, self._scrubber, result))
            attempt("ending nested runs", lambda: end_nested_runs(client, nested, _mlflow_status(result.status)))
            try:
                client.set_terminated(self.run_id, status=_mlflow_status(result.status),
                                      end_time=int(result.ended_at * 1000))
            except Exception as err:  # noqa: BLE001
                problems.append(f"status: {one_line(err)}")
                self._warn("; ".join(problems), result.run_dir)
                return replace(result, tracking=untracked(f"MLflow run {self.run_id} could not be ended: "
                                                          + "; ".join(problems)))
            self.status = result.status
            if problems:
                self._warn("; ".join(problems), result.run_dir)
            return replace(result, mlflow_run_id=self.run_id, tracking=self._state(problems))

    def end(
        self,
        outcome: TrainingResult | RunStatus | str = RunStatus.FINISHED,
        *,
        failure: str | None = None,
    ) -> TrainingResult | None:
        """End the run; a no-op when it has already ended.

        Args:
            outcome: a job's :class:`TrainingResult` (see :meth:`finish`), or
                just a status for a run that never got one.
            failure: for FAILED/KILLED without a result: what went wrong (tag
                ``nbexec.failure`` and the run description).

        Returns:
            The amended result when ``outcome`` is one, else None.
        """
        if isinstance(outcome, TrainingResult):
            return self.finish(outcome)
        status = RunStatus(outcome)
        with self._lock:
            if self.ended:
                return None
            try:
                self._end_without_result(status, failure)
            except Exception as err:  # noqa: BLE001 - ending must not hide the caller's error
                run_dir = self.plan.run_dir if self.plan is not None else None
                self._warn(f"could not end the run {status.value}: {one_line(err)}", run_dir)
        return None

    def abort(self, error: BaseException) -> None:
        """End the run for an exception raised before or instead of a result.

        KILLED for an interrupt or a cancelled job, FAILED otherwise (with the
        exception's headline as ``nbexec.failure``).
        """
        if isinstance(error, (KeyboardInterrupt, TrainingCancelled)):
            self.end(RunStatus.KILLED, failure=f"interrupted ({type(error).__name__})")
        elif isinstance(error, TrainingFailed):
            self.end(RunStatus.FAILED, failure=error.root_cause.headline())
        else:
            text = str(error).strip().splitlines()
            self.end(RunStatus.FAILED, failure=f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))

    def _end_without_result(self, status: RunStatus, failure: str | None) -> None:
        client = get_client(self.tracking_uri)
        extra: dict[str, object] = {"nbexec.status": status.value}
        run_dir = self.plan.run_dir if self.plan is not None else None
        if status is not RunStatus.FINISHED:
            from nbexec.tracking.finish import failure_note

            headline = failure or ("cancelled" if status is RunStatus.KILLED else "failed")
            extra[TAG_FAILURE] = headline
            extra[TAG_NOTE] = failure_note(status.value, headline, self._scrubber, run_dir=run_dir)
        self._log_tags(client, extra)
        if run_dir is not None and run_dir.is_dir():
            from nbexec.tracking.finish import upload_artifacts

            upload_artifacts(client, self.run_id, run_dir, self._scrubber)
        client.set_terminated(self.run_id, status=_mlflow_status(status))
        self.status = status

    def _state(self, problems: Sequence[str] = ()) -> dict[str, Any]:
        """What ``result.json`` records of this run (no credentials: they are cut from the URI)."""
        from nbexec.tracking.store import uri_for_display

        state: dict[str, Any] = {"state": "tracked", "run_id": self.run_id, "experiment_id": self.experiment_id,
                                 "uri": uri_for_display(self.tracking_uri)}
        if problems:
            state["problems"] = self._scrubber.text("; ".join(problems))
        return state

    def _log_tags(self, client: Any, tags: Mapping[str, object]) -> None:
        """Send tags, secrets scrubbed and values cut to MLflow's limit."""
        from mlflow.entities import RunTag

        clean = {
            mlflow_key(k): truncate(self._scrubber.text(str(v)), MAX_TAG_VALUE) for k, v in tags.items() if v is not None
        }
        log_batch_chunked(client, self.run_id, tags=[RunTag(k, v) for k, v in clean.items()])

    def _warn(self, what: str, run_dir: Path | None) -> None:
        where = f"; the run's files are in {run_dir} (metrics in events.jsonl)" if run_dir else ""
        warnings.warn(
            f"MLflow run {self.run_id} at {self.tracking_uri}: {what}. The training outcome is "
            f"not affected{where}.",
            TrackingWarning,
            stacklevel=3,
        )

    # --- context manager --------------------------------------------------------------

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.abort(exc)
        else:
            self.end(RunStatus.FINISHED)

    def __repr__(self) -> str:
        state = self.status.value if self.status else "RUNNING"
        return f"<TrackedRun {self.run_id} {state}, experiment {self.setup.experiment_name!r}>"


def tracking_finalizer(tracked_run: TrackedRun) -> Finalizer:
    """The runner finalizer that ends ``tracked_run`` from the job's result.

    Pass it in ``TrainingRun(..., finalizers=[...])``: it logs the metrics
    the child did not, uploads the run's files, sets FINISHED/FAILED/KILLED,
    and returns the result with ``mlflow_run_id``. It never raises.
    """
    return tracked_run.finish


def _result_headline(result: TrainingResult) -> str:
    if result.status is RunStatus.KILLED:
        return "cancelled (cancel() or an interrupt stopped every process of the job)"
    if result.root_cause is not None:
        return result.root_cause.headline()
    return f"the job failed (exit code {result.exit_code})"


def _mlflow_status(status: RunStatus) -> str:
    return status.value if status.is_terminal() else RunStatus.FAILED.value


def untracked(reason: str) -> dict[str, Any]:
    """``result.tracking`` of a job that ran without its MLflow run."""
    return {"state": "untracked", "reason": reason}


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, for warnings and tags."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]
