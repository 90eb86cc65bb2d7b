"""The handle of a launched job: status, wait, cancel, logs, events, result."""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.errors import NbexecError, RootCause, RunDirectoryTaken, TrainingCancelled, TrainingFailed
from nbexec.events import Event
from nbexec.plan import LaunchPlan
from nbexec.redact import Scrubber, redact_argv
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.job import Job, Launcher, LocalLauncher, Pump, PumpFeed
from nbexec.runner.lines import LogLine
from nbexec.runner.sinks import Dispatcher, Sink
from nbexec.runner.state import Phase, PhaseName, RunState, phase_event

MAX_EVENTS = 100_000  # events kept in memory; events.jsonl keeps them all
# The exit code a KILLED result records, always: minus SIGTERM, the signal cancel() sends
# (Popen's convention). What the processes themselves returned depends on a race between
# the signal and their own exit (0 when the job was just finishing, -15 or -9 otherwise),
# and says nothing more about the run than that it was stopped.
KILLED_EXIT_CODE = -int(signal.SIGTERM)

# Called once the job is over, before waiters wake up; may return an amended
# result (e.g. with the MLflow run id). Used by tracking and backup layers.
Finalizer = Callable[[TrainingResult], TrainingResult]


class NamedFinalizer:
    """A finalizer with the words the views show while it runs (``finishing · backing up the checkpoint``).

    A plain callable works as a finalizer too; it is shown as ``finishing``.
    """

    def __init__(self, detail: str, call: Finalizer) -> None:
        self.detail = detail
        self._call = call

    def __call__(self, result: TrainingResult) -> TrainingResult:
        return self._call(result)


class TrainingRun:
    """A running (or finished) training job. Create it with :func:`nbexec.launch`.

    Use ``wait()``/``result()`` to block, ``cancel()`` to stop, ``lines()`` and
    ``events`` to look inside while it runs. As a context manager, leaving the
    block with an exception cancels the job.

    One handle for every backend: a scheduler gives it a
    :class:`~nbexec.runner.job.Launcher` (default: torchrun here, under
    nbexec's guard), which starts a :class:`~nbexec.runner.job.Job` and the
    :class:`~nbexec.runner.job.Pump` that reads its output.
    """

    def __init__(
        self,
        plan: LaunchPlan,
        sinks: Sequence[Sink] = (),
        finalizers: Sequence[Finalizer] = (),
        *,
        launcher: Launcher | None = None,
    ) -> None:
        self.plan = plan
        self._launcher: Launcher = launcher or LocalLauncher()
        self._status = RunStatus.PENDING
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._cancel_requested = False
        self._result: TrainingResult | None = None
        self._events: list[Event] = []
        self._state = RunState()  # phase, progress (events', else read off rank 0's tqdm bar), metrics...
        self._sampler: Any = None  # the ResourceSampler of a local job
        self._failures: list[Event] = []  # ranks' failure events, in the order they came
        self._checkpoint: Path | None = None
        self._finalizers = list(finalizers)
        self._dispatcher = Dispatcher(sinks)
        self._job: Job | None = None
        self._pump: Pump | None = None
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        self.tracking: Any = None  # the TrackedRun (MLflow) when tracking is on

    # --- starting ---------------------------------------------------------------

    def start(self, *, write_inputs: bool = True, after_inputs: Callable[[], None] | None = None) -> TrainingRun:
        """Write the run dir's inputs, start the job and follow it; returns the handle (RUNNING).

        Args:
            write_inputs: write ``config.yaml`` and ``command.txt`` first (False:
                they are there already, e.g. on a node of a Slurm job).
            after_inputs: called once the inputs are written, just before the job
                starts (the launch starts opening the MLflow run there).

        Raises:
            RunDirectoryTaken: the run dir holds files already.
            NbexecError: the job could not be started (nothing is left running).
        """
        with self._lock:
            if self._job is not None:
                raise NbexecError(f"training run {self.name!r} was started already")
            if write_inputs:
                write_run_inputs(self.plan)
            if after_inputs is not None:
                after_inputs()
            self.started_at = time.time()
            self._state.set_phase(PhaseName.STARTING, "launching", self.started_at)
            feed = PumpFeed(self._dispatcher, self._record_events, self._record_text_progress, self._scrubber)
            self._job, self._pump = self._launcher.start(self.plan, feed)
            self._status = RunStatus.RUNNING
        self._dispatcher.start(self)
        self._start_sampler()
        self._thread = threading.Thread(target=self._supervise, name=f"nbexec-{self.plan.run_name}", daemon=True)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        job, pump = self._job, self._pump
        assert job is not None and pump is not None
        try:
            pump.run(lambda: job.poll() is not None)
        finally:
            if self._sampler is not None:
                self._sampler.stop()
            self._finish(job.finish())

    def _start_sampler(self) -> None:
        """Measure the ranks' CPU, memory and GPU while they run (a local job: its pump knows their pids)."""
        rank_pids = getattr(self._pump, "rank_pids", None)
        if self._job is None or self._job.pid is None or not isinstance(rank_pids, dict):
            return  # a remote job (Slurm, AzureML): its ranks are not on this machine
        from nbexec.runner.resources import ResourceSampler

        self._sampler = ResourceSampler(lambda: dict(rank_pids), self._note_event).start()

    def _note_event(self, event: Event) -> None:
        """An event the parent makes (a phase, a resources sample): to the run's state and the sinks."""
        event.setdefault("source", "parent")
        event.setdefault("rank", None)
        self._record_events([event])
        self._dispatcher.put_events([event])

    def _note_phase(self, name: PhaseName, detail: str | None = None) -> None:
        self._note_event(phase_event(name, detail))

    @functools.cached_property
    def _scrubber(self) -> Scrubber:
        """The secret values this job knows (config, environment, argv): kept out of every file it writes."""
        return Scrubber.from_sources(self.plan.config.to_dict(), self.plan.env, argv=self.plan.argv)

    def _finish(self, exit_code: int) -> None:
        assert self._job is not None
        status, root_cause = self._job.outcome(exit_code, self._cancel_requested)
        if status is RunStatus.KILLED:
            exit_code = KILLED_EXIT_CODE
        with self._lock:
            last_step, total_steps = self._state.last_step, self._state.total_steps
            data = self._state.data
        result = TrainingResult(
            run_name=self.plan.run_name,
            run_dir=self.plan.run_dir,
            status=status,
            exit_code=exit_code,
            started_at=self.started_at,
            ended_at=time.time(),
            nproc=self.plan.nproc,
            backend=self.plan.backend,
            config_hash=self.plan.config.config_hash,
            command=tuple(redact_argv(self.plan.argv)),  # e.g. "-- --password X" in the script args
            metrics=dict(self._state.metrics),
            checkpoint=self._checkpoint_path(),
            last_step=last_step,
            total_steps=total_steps,
            data_path=str(data["path"]) if data and data.get("path") else None,
            root_cause=_scrubbed(root_cause, self._scrubber),
            log_paths=self._pump.log_paths() if self._pump else {},
            tracking=None if self.plan.config.tracking.enabled else {"state": "off"},
        )
        if status is not RunStatus.KILLED:
            self._note_phase(PhaseName.FINISHING, "the ranks have exited")
        for finalize in self._finalizers:
            if status is not RunStatus.KILLED:
                self._note_phase(PhaseName.FINISHING, getattr(finalize, "detail", None))
            try:
                result = finalize(result)
            except Exception as err:  # noqa: BLE001 - bookkeeping must not lose the outcome
                self._dispatcher.put_lines([LogLine(None, "stderr", f"nbexec: {err}", time.time())])
        if result.untracked_reason:  # said where the job's lines go, and kept in result.json
            note = f"nbexec: the job ran untracked: {result.untracked_reason}"
            self._dispatcher.put_lines([LogLine(None, "stderr", note, time.time())])
        try:
            result.write()
        except OSError as err:  # a full disk: the outcome stays as it is, in memory and on screen
            reason = os.strerror(err.errno) if err.errno else str(err)
            note = f"nbexec: {contract.RESULT_FILE} could not be written in {self.plan.run_dir}: {reason}"
            self._dispatcher.put_lines([LogLine(None, "stderr", note, time.time())])
        finally:
            with self._lock:
                self._result = result
                self._status = status
            self._dispatcher.end(result)
            self._done.set()

    # --- events -----------------------------------------------------------------

    def _record_events(self, events: list[Event]) -> None:
        with self._lock:
            # run.events is what the ranks reported (as events.jsonl); the parent's own phases and
            # resource samples go to the state and the sinks (MLflow keeps the samples)
            self._events.extend(ev for ev in events if ev.get("source") != "parent")
            if len(self._events) > MAX_EVENTS:
                del self._events[: len(self._events) - MAX_EVENTS]
            self._state.apply(events)
            for ev in events:
                kind = ev.get("kind")
                if kind == "checkpoint" and ev.get("path"):
                    self._checkpoint = Path(ev["path"])
                elif kind == "failure":
                    self._failures.append(ev)

    def _record_text_progress(self, progress: Event) -> None:
        with self._lock:
            self._state.apply([progress])

    def _checkpoint_path(self) -> Path | None:
        if self._checkpoint is not None:
            return self._checkpoint
        default = self.plan.checkpoint_dir
        return default if default.is_dir() and any(default.iterdir()) else None

    # --- the public handle --------------------------------------------------------

    @property
    def name(self) -> str:
        return self.plan.run_name

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir

    @property
    def status(self) -> RunStatus:
        return self._status

    @property
    def job(self) -> Job | None:
        """What runs the job (a local process tree, a Slurm job, an AzureML job); None before it starts."""
        return self._job

    @property
    def pid(self) -> int | None:
        """Process id of the job guard, the parent of torchrun (its tree is the whole job); None for a remote job."""
        return self._job.pid if self._job is not None else None

    @property
    def job_id(self) -> str | None:
        """The scheduler's job id (Slurm, AzureML); None for a local job."""
        return self._job.job_id if self._job is not None else None

    @property
    def scheduler_state(self) -> str | None:
        """The scheduler's own name for the job's state (Slurm's ``RUNNING``); None for a local job."""
        return self._job.state if self._job is not None else None

    @property
    def events(self) -> list[Event]:
        """Events received so far (the most recent 100,000)."""
        with self._lock:
            return list(self._events)

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of each metric reported so far."""
        with self._lock:
            return dict(self._state.metrics)

    @property
    def progress(self) -> Event | None:
        """The latest progress (``step``, ``total``, ``epoch``, ``rate`` in steps/s, ``eta_s``...).

        From the trainer's progress events (speed and ETA measured over the
        recent ones); for a script that sends none, read off rank 0's
        tqdm-style bar (``source: "text"``, with ``rate`` and ``eta_s`` when the
        bar shows them).
        """
        with self._lock:
            return self._state.progress

    @property
    def phase(self) -> Phase:
        """What the job is doing: starting, training, finishing (after the last step) or stopping."""
        with self._lock:
            return self._state.phase

    @property
    def resources(self) -> Event | None:
        """The latest sample of the ranks' CPU, memory and GPU use (a local job; None before the first)."""
        with self._lock:
            return self._state.resources

    @property
    def failures(self) -> list[Event]:
        """The failure events of ranks that raised, in the order they came (empty while all is well)."""
        with self._lock:
            return list(self._failures)

    def lines(self, rank: int | None = 0, n: int | None = None) -> list[LogLine]:
        """The recent lines of one rank (``None``: the launcher), oldest first."""
        lines = self._pump.lines(rank) if self._pump else []
        return lines[-n:] if n else lines

    def log_path(self, rank: int | None = 0) -> Path:
        """The log file of one rank (None: the launcher), wherever the pump found it (e.g. another node's dir)."""
        found = self._pump.log_paths().get("launcher" if rank is None else f"rank{rank}") if self._pump else None
        if found is not None:
            return found
        if rank is None:
            return self.plan.log_dir / contract.LAUNCHER_LOG
        return contract.rank_log_path(self.plan.run_dir, rank)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the job ends; returns its final status.

        Raises:
            TimeoutError: the job is still running after ``timeout`` seconds.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"training run {self.name!r} still running after {timeout} s")
        return self._status

    def result(self, timeout: float | None = None) -> TrainingResult:
        """Wait for the job and return its result.

        Raises:
            TrainingFailed: a rank failed (root cause, exit code, log paths).
            TrainingCancelled: the job was cancelled.
            TimeoutError: still running after ``timeout`` seconds.
        """
        self.wait(timeout)
        error = self.exception()
        if error is not None:
            raise error
        assert self._result is not None
        return self._result

    @property
    def outcome(self) -> TrainingResult | None:
        """The final result whatever the status (never raises); None while the job runs."""
        return self._result

    def exception(self) -> TrainingFailed | TrainingCancelled | None:
        """The error ``result()`` would raise, or None (also while running)."""
        result = self._result
        if result is None or result.status is RunStatus.FINISHED:
            return None
        if result.status is RunStatus.KILLED:
            return TrainingCancelled(f"training run {self.name!r} was cancelled; logs: {self.plan.log_dir}")
        assert result.root_cause is not None
        rank = result.root_cause.rank
        tail = [ln.text for ln in self.lines(rank, 20)] if self._pump else []
        return TrainingFailed(
            run_name=self.name, root_cause=result.root_cause, log_paths=result.log_paths, log_tail=tail
        )

    def cancel(self, grace: float = 10.0) -> None:
        """Stop the job: SIGTERM to every process, ``grace`` seconds, then SIGKILL.

        Idempotent; returns once no process of the job is left, including
        processes its process tree lost (its guard killed). The run ends
        KILLED, unless it had ended already.

        Raises:
            NbexecError: some process of the job is still alive after SIGKILL
                (its pid is in the message).
        """
        with self._lock:
            if self._done.is_set() or self._job is None:
                return
            first, self._cancel_requested = not self._cancel_requested, True
        if first:
            self._note_phase(PhaseName.STOPPING, "cancelled: stopping every process of the job")
        try:
            self._job.stop(grace)
        except NbexecError as err:
            raise NbexecError(f"training run {self.name!r}: {err}") from err
        self._done.wait(DRAIN_TIMEOUT)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.cancel()

    def __repr__(self) -> str:
        prog = self.progress
        where = ""
        if prog and prog.get("total"):
            where = f", step {prog.get('step')}/{prog.get('total')}"
        job = f", job {self.job_id} {self.scheduler_state}" if self.job_id else ""
        return (f"<TrainingRun {self.name!r} {self._status.value}{job}, {self.plan.config.launch.nnodes} node(s) x "
                f"{self.plan.nproc}x{self.plan.backend}{where}>")


DRAIN_TIMEOUT = 30.0  # cancel() waits this long for the bookkeeping after the kill


def write_run_inputs(plan: LaunchPlan) -> None:
    """Create the run dir and write ``config.yaml`` and ``command.txt`` (secrets redacted).

    The run dir is claimed atomically (its ``logs/`` is made with ``exist_ok=False``):
    of two jobs given the same run name at once, one gets it, the other the error.

    Raises:
        RunDirectoryTaken: the run dir already holds files, or another job claimed it
            first (an EnvironmentCheckError and a FileExistsError; nothing is overwritten).
    """
    import yaml

    from nbexec.redact import split_secrets

    run_dir = plan.run_dir
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise FileExistsError(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / contract.LOG_DIR).mkdir()
    except FileExistsError:
        raise RunDirectoryTaken(run_dir) from None
    clean, _ = split_secrets(plan.config.to_dict())
    clean["launch"]["args"] = redact_argv(clean["launch"].get("args") or [])  # "-- --api-key=X"
    (run_dir / contract.CONFIG_FILE).write_text(yaml.safe_dump(clean, sort_keys=False), encoding="utf-8")
    env_lines = "\n".join(f"{k}={v}" for k, v in plan.recorded_env().items())
    argv = redact_argv(plan.argv)  # e.g. "--hf-token VALUE" in the script args
    (run_dir / contract.COMMAND_FILE).write_text(
        f"# argv, exactly but for secrets (JSON list; no shell is involved)\n{json.dumps(argv)}\n"
        f"# the same, shell-quoted for copying into a terminal\n{shlex.join(argv)}\n"
        f"# environment nbexec set, and relevant inherited variables (secrets redacted)\n{env_lines}\n",
        encoding="utf-8",
    )


def _scrubbed(cause: RootCause | None, scrubber: Scrubber) -> RootCause | None:
    """A root cause without the secret values an exception's text may carry (a token in a URL...)."""
    if cause is None or not scrubber:
        return cause
    from dataclasses import replace

    return replace(cause, message=scrubber.text(cause.message), traceback=scrubber.text(cause.traceback),
                   where=scrubber.text(cause.where))


__all__ = ["TrainingRun", "Finalizer", "NamedFinalizer", "KILLED_EXIT_CODE", "write_run_inputs"]
