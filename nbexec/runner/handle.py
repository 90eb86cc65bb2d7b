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
from typing import TYPE_CHECKING, Any

import nbexec.contract as contract
from nbexec.config import TRAINER_SECTIONS
from nbexec.errors import NbexecError, RootCause, RunDirectoryTaken, TrainingCancelled, TrainingFailed
from nbexec.events import Event
from nbexec.plan import LaunchPlan
from nbexec.redact import Scrubber, redact_argv
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.job import Job, Launcher, LocalLauncher, Pump, PumpFeed
from nbexec.runner.lines import LogLine
from nbexec.runner.sinks import Dispatcher, Sink
from nbexec.runner.stall import Stall, StallFinding, StallWatch, describe_stall, stall_path_note, stuck_ranks
from nbexec.runner.state import Phase, PhaseName, RunState, phase_event
from nbexec.stacks.request import DUMP_TIMEOUT_S

if TYPE_CHECKING:
    from nbexec.stacks.snapshot import StackSnapshot

MAX_EVENTS = 100_000
# How much longer than launch.stall_timeout a job may stay silent before any rank starts its script:
# torchrun imports torch and meets its peers, the ranks wait for the MLflow run (up to tracking.timeout).
STARTUP_ALLOWANCE_S = 60.0  # events kept in memory; events.jsonl keeps them all
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
        self._watch: StallWatch | None = None  # set when launch.stall_timeout > 0 and the job is local
        self._stalls: list[Stall] = []
        self._stall: Stall | None = None  # the stall going on now
        self._stall_cancel: Stall | None = None  # the stall that made nbexec cancel the job
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
            stall_timeout = self.plan.config.launch.stall_timeout
            if stall_timeout > 0:
                # before any rank runs its script: torchrun starting, the ranks waiting for the MLflow run
                tracking = self.plan.config.tracking
                startup = max(STARTUP_ALLOWANCE_S, tracking.timeout if tracking.enabled else 0.0)
                self._watch = StallWatch(stall_timeout, time.monotonic(), startup_s=startup)
            feed = PumpFeed(self._dispatcher, self._record_events, self._record_text_progress, self._scrubber,
                            on_output=self._record_output if self._watch is not None else None)
            self._job, self._pump = self._launcher.start(self.plan, feed)
            self._status = RunStatus.RUNNING
        self._dispatcher.start(self)
        self._start_sampler()
        self._thread = threading.Thread(target=self._supervise, name=f"nbexec-{self.plan.run_name}", daemon=True)
        self._thread.start()
        if self._watch is not None and self._job.pid is not None:  # stacks come from local ranks only
            threading.Thread(target=self._watch_for_stalls, name=f"nbexec-stall-{self.plan.run_name}",
                             daemon=True).start()
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
            if self._stall_cancel is not None:  # nbexec stopped it for hanging: a failure, not the user's cancel
                status, root_cause = RunStatus.FAILED, self._stall_cancel.root_cause()
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
        watch = self._watch
        now = time.monotonic()
        with self._lock:
            # run.events is what the ranks reported (as events.jsonl); the parent's own phases and
            # resource samples go to the state and the sinks (MLflow keeps the samples)
            self._events.extend(ev for ev in events if ev.get("source") != "parent")
            if len(self._events) > MAX_EVENTS:
                del self._events[: len(self._events) - MAX_EVENTS]
            self._state.apply(events)
            for ev in events:
                kind = ev.get("kind")
                rank = ev.get("rank")
                if watch is not None and isinstance(rank, int):
                    step = ev.get("step")
                    if kind == "progress" and isinstance(step, int):
                        watch.progress(rank, step, now)
                    else:
                        watch.output(now)
                if kind == "checkpoint" and ev.get("path"):
                    self._checkpoint = Path(ev["path"])
                elif kind == "failure":
                    self._failures.append(ev)

    def _record_output(self, rank: int) -> None:
        """A rank sent output (called by the pump for every chunk: kept to one clock read)."""
        watch = self._watch
        if watch is not None:
            watch.output(time.monotonic())

    # --- stalls -----------------------------------------------------------------

    def _watch_for_stalls(self) -> None:
        """Once a second (or sooner for a short timeout): has the job stalled, or recovered?"""
        watch = self._watch
        assert watch is not None
        interval = min(1.0, max(0.05, watch.timeout_s / 20))
        while not self._done.wait(interval):
            if not watch.ranks_seen and any(self.plan.log_dir.glob(contract.RANK_PROCESS_GLOB)):
                watch.output(time.monotonic())  # a rank is starting its script (it records itself then)
            if watch.recovered():
                self._stall_over()
            finding = watch.check(time.monotonic())
            if finding is not None and not self._done.is_set():
                try:
                    self._on_stall(finding)
                except Exception as err:  # noqa: BLE001 - a watcher problem must not touch the job
                    self._say(f"nbexec: stall detection failed: {err!r}")

    def _on_stall(self, finding: StallFinding) -> None:
        """Take the stacks, say what they show, tell the sinks; cancel when ``launch.on_stall`` says so."""
        from dataclasses import replace

        from nbexec.stacks.snapshot import py_spy, take_stacks

        action = str(self.plan.config.launch.on_stall)
        stacks: StackSnapshot | None = None
        error = ""
        try:
            stacks = take_stacks(self.run_dir, native=py_spy() is not None, save=False)
        except NbexecError as err:
            error = str(err)
        message = describe_stall(finding, stacks, stacks_error=error)
        if stacks is not None:
            try:
                stacks = replace(stacks, notes=(f"# stall: {message}",)).save()
            except OSError as err:  # a full disk: the message still goes out
                error = f"stacks not saved: {err}"
        stall = Stall(message=message, finding=finding, stacks=stacks, ranks=stuck_ranks(finding, stacks),
                      detected_at=time.time(), action=action)
        with self._lock:
            self._stalls.append(stall)
            self._stall = stall
            self._events.append(stall.event())
        then = ("cancelling the job (launch.on_stall: cancel)" if action == "cancel"
                else "the job goes on (launch.on_stall: warn)")
        note = stall_path_note(stacks, self.run_dir) or error
        self._say(f"nbexec: stall: {message}" + (f"; {note}" if note else "") + f"; {then}")
        self._dispatcher.put_events([stall.event()])
        if action == "cancel":
            self._stall_cancel = stall
            self.cancel()

    def _stall_over(self) -> None:
        with self._lock:
            stall, self._stall = self._stall, None
        if stall is not None:
            who = "the job is" if not stall.ranks else f"{'rank' if len(stall.ranks) == 1 else 'ranks'} " \
                f"{', '.join(map(str, stall.ranks))} {'is' if len(stall.ranks) == 1 else 'are'}"
            self._say(f"nbexec: {who} progressing again")

    def _say(self, text: str) -> None:
        self._dispatcher.put_lines([LogLine(None, "stderr", text, time.time())])

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
    def stall(self) -> Stall | None:
        """The stall going on now (what it said, the stacks, the stuck ranks); None while the job progresses."""
        return self._stall

    @property
    def stalls(self) -> list[Stall]:
        """Every stall found so far, oldest first (``launch.stall_timeout``)."""
        with self._lock:
            return list(self._stalls)

    def stacks(self, ranks: Sequence[int] | None = None, *, native: bool = False,
               timeout: float = DUMP_TIMEOUT_S, save: bool = True) -> StackSnapshot:
        """The stack of every thread of every rank, taken now, without stopping the job.

        Saved to ``logs/stacks-<time>.txt``; printed or displayed, the ranks show side by side.

        Args:
            ranks: which ranks (None: all).
            native: also the C/C++ frames, through ``py-spy dump --native`` (when py-spy is installed).
            timeout: seconds to wait for the ranks' dumps.
            save: write them to ``logs/stacks-<time>.txt``.

        Raises:
            NbexecError: the job has not started its ranks yet, or is over.
        """
        from nbexec.stacks.snapshot import take_stacks

        if self._job is None or self.done():
            state = "has not started" if self._job is None else f"is over ({self._status.value})"
            raise NbexecError(f"training run {self.name!r} {state}: there are no ranks to take stacks of; "
                              f"stacks taken earlier are in {self.plan.log_dir}/stacks-*.txt")
        return take_stacks(self.run_dir, ranks, native=native, timeout=timeout, save=save)

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
    run_dir = plan.run_dir
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise FileExistsError(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / contract.LOG_DIR).mkdir()
    except FileExistsError:
        raise RunDirectoryTaken(run_dir) from None
    (run_dir / contract.CONFIG_FILE).write_text(resolved_config_yaml(plan), encoding="utf-8")
    env_lines = "\n".join(f"{k}={v}" for k, v in plan.recorded_env().items())
    argv = redact_argv(plan.argv)  # e.g. "--hf-token VALUE" in the script args
    (run_dir / contract.COMMAND_FILE).write_text(
        f"# argv, exactly but for secrets (JSON list; no shell is involved)\n{json.dumps(argv)}\n"
        f"# the same, shell-quoted for copying into a terminal\n{shlex.join(argv)}\n"
        f"# environment nbexec set, and relevant inherited variables (secrets redacted)\n{env_lines}\n",
        encoding="utf-8",
    )


def resolved_config_yaml(plan: LaunchPlan) -> str:
    """``config.yaml``: what ran, secrets redacted.

    The trainer's sections come resolved from the config (defaults filled in);
    ``nproc`` and ``backend`` are the plan's, not ``auto``; a section a script
    of the user's own does not use is left out rather than written empty.
    """
    import yaml

    from nbexec.redact import split_secrets

    clean, _ = split_secrets(plan.config.to_dict())
    for name in TRAINER_SECTIONS:
        if not clean[name]:
            del clean[name]
    launch = clean["launch"]
    resolved_here = [key for key in ("nproc", "backend") if launch[key] == "auto"]
    launch["nproc"], launch["backend"] = plan.nproc, plan.backend
    launch["args"] = redact_argv(launch.get("args") or [])  # "-- --api-key=X"
    header = "# nbexec: the resolved config of this run (what ran; secrets redacted)\n"
    if resolved_here:
        header += f"# launch.{' and launch.'.join(resolved_here)} were auto, resolved on this machine\n"
    return header + yaml.safe_dump(clean, sort_keys=False)


def _scrubbed(cause: RootCause | None, scrubber: Scrubber) -> RootCause | None:
    """A root cause without the secret values an exception's text may carry (a token in a URL...)."""
    if cause is None or not scrubber:
        return cause
    from dataclasses import replace

    return replace(cause, message=scrubber.text(cause.message), traceback=scrubber.text(cause.traceback),
                   where=scrubber.text(cause.where))


__all__ = ["TrainingRun", "Finalizer", "NamedFinalizer", "KILLED_EXIT_CODE", "write_run_inputs"]
