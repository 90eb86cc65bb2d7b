"""One trial of a sweep: a real training job through the core runner, reported to Optuna and MLflow.

The trial's config is the base config with the trial's params set. It runs
like any job (its own run directory, logs, events, result) and, when the
sweep is tracked, into an MLflow run nested under the study's run. Every
metric event carrying the objective is reported to Optuna as an intermediate
value as it arrives, so a pruner can stop the job (it is cancelled, the trial
ends PRUNED). A job that fails, or a config the params make invalid, ends the
trial FAIL with the reason in its user attributes; the sweep goes on.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.errors import ConfigError, EnvironmentCheckError, NbexecError, TrackingError
from nbexec.events import Event
from nbexec.hpo.keys import TRIAL_KEY_ATTR, get_or_compute_trial_key_hash
from nbexec.hpo.space import SearchSpace, apply_params
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun

# Trial user attributes nbexec sets.
ATTR_RUN_NAME = "nbexec.run_name"
ATTR_RUN_DIR = "nbexec.run_dir"
ATTR_MLFLOW_RUN = "nbexec.mlflow_run_id"
ATTR_WORKER = "nbexec.worker"  # {"host", "pid", "started"}: who runs it (stale-trial detection)
ATTR_INTERRUPTED = "nbexec.interrupted"  # the sweep was interrupted during it: run it again
ATTR_FAILURE = "nbexec.failure"
ATTR_ATTEMPT = "nbexec.attempt"
# Environment of a trial's job: scripts may read which trial they are.
ENV_STUDY = "HPO_STUDY_NAME"
ENV_TRIAL = "HPO_TRIAL_NUMBER"


@dataclass(frozen=True)
class TrialRecord:
    """A trial as the sweep reports it (from the study, so also for earlier sessions' trials)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: Mapping[str, Any]
    key_hash: str | None = None
    run_name: str | None = None
    run_dir: str | None = None
    mlflow_run_id: str | None = None
    duration_s: float | None = None
    failure: str | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def from_frozen(cls, t: Any) -> TrialRecord:
        attrs = t.user_attrs
        duration = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        return cls(
            number=t.number, state=t.state.name, value=t.value, params=dict(t.params),
            key_hash=attrs.get(TRIAL_KEY_ATTR), run_name=attrs.get(ATTR_RUN_NAME), run_dir=attrs.get(ATTR_RUN_DIR),
            mlflow_run_id=attrs.get(ATTR_MLFLOW_RUN), duration_s=duration, failure=attrs.get(ATTR_FAILURE),
            intermediate=dict(t.intermediate_values),
        )

    def line(self, objective: str) -> str:
        """``trial 3 COMPLETE val_loss=0.8123 (4.2 s) training.learning_rate=0.01``."""
        value = f" {objective}={self.value:.6g}" if self.value is not None else ""
        took = f" ({self.duration_s:.1f} s)" if self.duration_s is not None else ""
        params = " ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        why = f": {self.failure}" if self.failure and self.state == "FAIL" else ""
        return f"trial {self.number} {self.state}{value}{took} {params}{why}".rstrip()


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one sweep shares."""

    config: TrainingConfig
    space: SearchSpace
    objective: str
    study_key_hash: str
    study_name: str
    output_dir: Path
    study_run_id: str | None = None
    tracking_uri: str | None = None
    sinks: Callable[[Any], Sequence[Sink]] | None = None  # per trial: display sinks for its job
    timeout: float | None = None


class ObjectiveSink(Sink):
    """Hands the objective's values from rank 0's metric events to the sweep's thread."""

    wants_lines = False

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.values: queue.Queue[tuple[int | None, float] | None] = queue.Queue()

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            metrics = ev.get("metrics")
            if ev.get("kind") != "metrics" or ev.get("rank", 0) not in (0, None) or not isinstance(metrics, dict):
                continue
            value = metrics.get(self.objective)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                step = ev.get("step")
                self.values.put((step if isinstance(step, int) else None, float(value)))

    def on_end(self, result: object) -> None:
        self.values.put(None)  # every event was delivered before this


def worker_identity() -> dict[str, Any]:
    """This process, as a trial records its owner."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def is_stale(trial: Any) -> bool:
    """A RUNNING trial nobody runs any more: interrupted, or its process on this host is gone."""
    attrs = trial.user_attrs
    if attrs.get(ATTR_INTERRUPTED):
        return True
    worker = attrs.get(ATTR_WORKER)
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False  # another machine's trial: it may well be running
    import psutil

    try:
        proc = psutil.Process(int(worker["pid"]))
        return abs(proc.create_time() - float(worker["started"])) > 1.0  # the pid was reused
    except (psutil.NoSuchProcess, KeyError, ValueError, TypeError):
        return True


def claim_trial(trial: Any) -> int:
    """Make this process the trial's owner (a new attempt); returns the attempt number.

    The sweep claims a trial under the study lock (``sweep.study_lock``), so no
    other worker takes it up as stale in between.
    """
    attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 0)) + 1
    with hold_interrupt():  # every study write is held the same way
        trial.set_user_attr(ATTR_ATTEMPT, attempt)
        trial.set_user_attr(ATTR_WORKER, worker_identity())
        trial.set_user_attr(ATTR_INTERRUPTED, False)
    return attempt


def run_trial(study: Any, trial: Any, setup: TrialSetup, attempt: int | None = None) -> TrialRecord:
    """Run one trial to its end and tell the study; returns the trial as recorded.

    ``attempt``: from :func:`claim_trial` when the caller claimed the trial; None claims it here.

    Raises:
        KeyboardInterrupt: after cancelling the job (the trial is marked to run again on resume).
    """
    import optuna

    if attempt is None:
        attempt = claim_trial(trial)
    try:
        return _run(study, trial, setup, attempt, optuna)
    except BaseException:
        # Interrupted (or broken) before the study was told: the next run_hpo, even in this
        # same process (a notebook kernel), runs this trial again instead of waiting for it.
        with hold_interrupt():
            if not study.trials[trial.number].state.is_finished():
                trial.set_user_attr(ATTR_INTERRUPTED, True)
        raise


def _run(study: Any, trial: Any, setup: TrialSetup, attempt: int, optuna: Any) -> TrialRecord:
    run_name = _run_name(setup, trial.number, attempt)
    with hold_interrupt():  # suggest() and the key write the trial's params and attributes
        params = setup.space.suggest(trial)
        key = get_or_compute_trial_key_hash(trial=trial, study_key_hash=setup.study_key_hash, params=params)
        trial.set_user_attr(ATTR_RUN_NAME, run_name)
    try:
        plan = _prepare(setup, params, run_name, trial.number)
        with hold_interrupt():
            trial.set_user_attr(ATTR_RUN_DIR, str(plan.run_dir))
    except (ConfigError, EnvironmentCheckError) as err:
        return _not_started(study, trial, setup, params, run_name, key, err, optuna)
    reporter = ObjectiveSink(setup.objective)
    run: TrainingRun | None = None
    outcome: str
    value: float | None
    failure: str | None
    try:
        run = _launch(trial, setup, plan, params, key, reporter)
    except (ConfigError, EnvironmentCheckError, TrackingError) as err:  # nothing was started
        return _not_started(study, trial, setup, params, run_name, key, err, optuna)
    except NbexecError as err:
        outcome, value, failure = "FAIL", None, f"{type(err).__name__}: {str(err).splitlines()[0]}"
    else:
        outcome, value, failure = _follow_job(run, trial, setup, reporter)
    if run is not None and run.tracking is not None and run.tracking.run_id:
        _tag_outcome(setup, run.tracking.run_id, outcome, value)
    with hold_interrupt():
        if failure:
            trial.set_user_attr(ATTR_FAILURE, failure)
        study.tell(trial, value if outcome == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, outcome))
    return _record(study, trial.number)


def _not_started(study: Any, trial: Any, setup: TrialSetup, params: Mapping[str, Any], run_name: str, key: str,
                 err: Exception, optuna: Any) -> TrialRecord:
    """A trial whose job never started: FAIL, with why, and its (FAILED) run under the study's."""
    failure = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    with hold_interrupt():
        trial.set_user_attr(ATTR_FAILURE, failure)
    _record_unstarted(setup, params, run_name, trial.number, key, failure, trial)
    with hold_interrupt():
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return _record(study, trial.number)


def _launch(trial: Any, setup: TrialSetup, plan: Any, params: Mapping[str, Any], key: str,
            reporter: ObjectiveSink) -> TrainingRun:
    """Start the trial's job; its MLflow run (nested under the study's) is opened first, through launch()."""
    from nbexec.executor import TrackingOptions, launch

    sinks: list[Sink] = [reporter, *(setup.sinks(trial) if setup.sinks else ())]
    tracking = None
    if setup.study_run_id is not None:
        tracking = TrackingOptions(
            parent_run_id=setup.study_run_id, run_name=f"{setup.study_name}-{plan.run_name}", params=params,
            tags=_trial_tags(setup, trial.number, key), open_first=True,  # its id is the trial's before the job
        )
    run = launch(plan=plan, sinks=sinks, tracking=tracking)
    if run.tracking is not None:
        with hold_interrupt():
            trial.set_user_attr(ATTR_MLFLOW_RUN, run.tracking.run_id)
    return run


def _follow_job(run: TrainingRun, trial: Any, setup: TrialSetup,
                reporter: ObjectiveSink) -> tuple[str, float | None, str | None]:
    """Report intermediate values, prune, time out; returns (state name, objective value, failure)."""
    stopped = _follow(run, trial, reporter, setup.timeout)
    result = _final_result(run)
    if stopped == "pruned":
        return "PRUNED", None, None
    if stopped == "timeout":
        return "FAIL", None, f"timed out: the job was cancelled after {setup.timeout:g} s (trial_timeout)"
    if result.status is RunStatus.KILLED:
        return "FAIL", None, "the job was cancelled"
    if result.status is RunStatus.FAILED:
        why = result.root_cause.headline() if result.root_cause else f"exit code {result.exit_code}"
        return "FAIL", None, why
    value = result.metrics.get(setup.objective)
    if not isinstance(value, (int, float)) or value != value:  # missing or NaN
        reported = ", ".join(sorted(result.metrics)) or "none"
        return "FAIL", None, (f"the job finished but reported no {setup.objective!r} "
                              f"(metrics reported: {reported}); pick one of those as the objective")
    return "COMPLETE", float(value), None


def _follow(run: TrainingRun, trial: Any, reporter: ObjectiveSink, timeout: float | None) -> str | None:
    """Report each objective value to the trial as it arrives; cancel the job when it is pruned or late.

    Returns:
        ``"pruned"``, ``"timeout"`` or None (the job ended by itself).
    """
    deadline = time.monotonic() + timeout if timeout else None
    count = 0
    stopped: str | None = None
    try:
        while True:
            try:
                item = reporter.values.get(timeout=0.5)
            except queue.Empty:
                if stopped is None and deadline is not None and time.monotonic() > deadline:
                    stopped = "timeout"
                    run.cancel()
                continue
            if item is None:  # the job is over; every event came before this
                return stopped
            if stopped is not None:
                continue
            step, value = item
            step = step if step is not None else count
            count += 1
            with hold_interrupt():  # a stop button mid-query left the study's SQLite locked
                trial.report(value, step)
                prune = trial.should_prune()
            if prune:
                stopped = "pruned"
                run.cancel()
    except BaseException:
        run.cancel()  # run_trial marks the trial to run again
        raise


@contextmanager
def hold_interrupt() -> Iterator[None]:
    """Let study storage calls finish before Ctrl-C / a notebook's stop button lands.

    Every write to the study (ask, suggest, set_user_attr, report, tell) runs
    inside this; the job itself, MLflow and waiting stay interruptible.

    A KeyboardInterrupt raised inside SQLAlchemy leaves the study's SQLite
    connection mid-transaction, and the sweep's own clean-up (marking the trial
    to run again) then fails with "database is locked". Here SIGINT is only
    noted during the call and handed to the previous handler right after it.
    Signal handlers can be changed only in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if noted:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


def _final_result(run: TrainingRun) -> TrainingResult:
    run.wait()
    result = run.outcome  # whatever it was; result() would raise for FAILED/KILLED
    assert result is not None
    return result


def _run_name(setup: TrialSetup, number: int, attempt: int) -> str:
    name = f"trial-{number:03d}" + (f"-a{attempt}" if attempt > 1 else "")
    while (setup.output_dir / name).exists():  # a stale attempt's directory stays as it was
        attempt += 1
        name = f"trial-{number:03d}-a{attempt}"
    return name


def _prepare(setup: TrialSetup, params: Mapping[str, Any], run_name: str, number: int) -> Any:
    from nbexec.executor import prepare

    # Tracked when the study is: the trial's run goes in the study's store, nested under its run
    # (launch() opens it); config.yaml says so.
    tracking: dict[str, Any] = {"enabled": False}
    if setup.study_run_id is not None:
        tracking = {"enabled": True, "uri": setup.tracking_uri}
    config = apply_params(setup.config, params, output={"dir": str(setup.output_dir), "run_name": run_name},
                          tracking=tracking)
    env = {**os.environ, ENV_STUDY: setup.study_name, ENV_TRIAL: str(number)}
    return prepare(config, base_env=env)


def _trial_tags(setup: TrialSetup, number: int, key: str) -> dict[str, object]:
    from nbexec.hpo.keys import STUDY_KEY_ATTR

    return {"nbexec.hpo.study_name": setup.study_name, "nbexec.hpo.trial_number": number,
            STUDY_KEY_ATTR: setup.study_key_hash, TRIAL_KEY_ATTR: key, "nbexec.stage": "hpo-trial"}


def _record_unstarted(setup: TrialSetup, params: Mapping[str, Any], run_name: str, number: int, key: str,
                      failure: str, trial: Any) -> None:
    """A trial whose job never started still gets its (FAILED) run, so the study run shows every trial."""
    if setup.study_run_id is None:
        return
    from nbexec.tracking import create_training_child_run

    try:
        tracked = create_training_child_run(
            setup.study_run_id, run_name=f"{setup.study_name}-{run_name}", params=params,
            tracking_uri=setup.tracking_uri, tags={**_trial_tags(setup, number, key), "nbexec.hpo.trial_state": "FAIL"},
        )
        trial.set_user_attr(ATTR_MLFLOW_RUN, tracked.run_id)
        tracked.end(RunStatus.FAILED, failure=failure)
    except TrackingError:
        pass  # the trial is recorded FAIL in the study either way


def _tag_outcome(setup: TrialSetup, run_id: str, state: str, value: float | None) -> None:
    from nbexec.tracking.store import get_client

    if setup.tracking_uri is None:
        return
    try:
        client = get_client(setup.tracking_uri)
        client.set_tag(run_id, "nbexec.hpo.trial_state", state)
        if value is not None:
            client.log_metric(run_id, "hpo.objective", value)
    except Exception:  # noqa: BLE001 - MLflow bookkeeping must not lose the trial's outcome
        pass


def _record(study: Any, number: int) -> TrialRecord:
    return TrialRecord.from_frozen(study.trials[number])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
