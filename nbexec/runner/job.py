"""What a run handle holds: a :class:`Job` (the running thing) and a :class:`Pump` (its output).

:class:`~nbexec.runner.handle.TrainingRun` is one handle for every backend. A
scheduler gives it a :class:`Launcher`; when the run starts, the launcher
returns the job and the pump, and the handle does the rest the same way for
all of them: follow the output until the job is over, finish the job, build
the result, run the finalizers, tell the sinks. What differs per backend is
behind these three small protocols:

- a local job is torchrun under nbexec's guard (:class:`LocalJob`, here);
- a Slurm job and an AzureML job live in their scheduler's package, each with
  one table from its backend's states to :class:`~nbexec.result.RunStatus`.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nbexec.errors import NbexecError, RootCause
from nbexec.result import RunStatus
from nbexec.runner.rootcause import find_root_cause

if TYPE_CHECKING:
    from nbexec.events import Event
    from nbexec.plan import LaunchPlan
    from nbexec.redact import Scrubber
    from nbexec.runner.lines import LogLine
    from nbexec.runner.sinks import Dispatcher
    from nbexec.runner.streams import LogPump

RootCauseFinder = Callable[[Path, "int | None"], RootCause]


class Job(Protocol):
    """A started job, seen like a process.

    Attributes:
        pid: the local process at the root of the job (nbexec's guard), None for a remote job.
        job_id: the scheduler's id of the job, None for a local one.
        state: the scheduler's own name for the job's state (Slurm's ``RUNNING``), None for a local job.
    """

    @property
    def pid(self) -> int | None: ...

    @property
    def job_id(self) -> str | None: ...

    @property
    def state(self) -> str | None: ...

    def poll(self) -> int | None:
        """None while the job runs (its output may still be coming), then its exit code."""

    def finish(self) -> int:
        """Once the output has been read to the end: wait for the job's end, tidy up, return its exit code."""

    def stop(self, grace: float, /) -> None:
        """Ask the job to stop (``grace`` seconds before it is forced); return once it has.

        Raises:
            NbexecError: the job could not be stopped (what is left, and what to do).
        """

    def outcome(self, exit_code: int, cancelled: bool, /) -> tuple[RunStatus, RootCause | None]:
        """The run's status from the job's end, and why it failed (None unless FAILED)."""


class Pump(Protocol):
    """Moves a job's output to the run dir, the tail and the sinks until the job is over."""

    def run(self, job_over: Callable[[], bool], /) -> None:
        """Pump until ``job_over()`` and every stream is drained."""

    def lines(self, rank: int | None, /) -> list[LogLine]:
        """The recent lines of one rank (None: the launcher), oldest first."""

    def log_paths(self) -> dict[str, Path]:
        """``{"rank0": path, ..., "launcher": path}`` of the log files written."""


@dataclass(frozen=True)
class PumpFeed:
    """Where a pump sends what it reads (given by the run handle to its launcher)."""

    dispatcher: Dispatcher
    on_events: Callable[[list[Event]], None]
    on_text_progress: Callable[[Event], None]
    scrubber: Scrubber | None
    on_output: Callable[[int], None] | None = None  # a rank sent output (stall detection)


class Launcher(Protocol):
    """Starts a planned job; what a scheduler gives the run handle."""

    def start(self, plan: LaunchPlan, feed: PumpFeed, /) -> tuple[Job, Pump]:
        """Start the job and its pump (the run dir's inputs are written already).

        Raises:
            NbexecError: the job could not be started (nothing is left running).
        """


# --- local jobs: torchrun under nbexec's guard ---------------------------------------


class LocalLauncher:
    """Runs the plan's torchrun command here, under the job guard, its output through a :class:`LogPump`.

    Args:
        find_cause: how the root cause of a failure is found (a multi-node job
            looks at every node's run dir).
    """

    def __init__(self, find_cause: RootCauseFinder = find_root_cause) -> None:
        self.find_cause = find_cause

    def start(self, plan: LaunchPlan, feed: PumpFeed) -> tuple[Job, Pump]:
        from nbexec.runner.process import spawn_launcher
        from nbexec.runner.streams import LogPump

        pump = LogPump(plan.run_dir, feed.dispatcher, on_events=feed.on_events,
                       on_text_progress=feed.on_text_progress, scrubber=feed.scrubber, on_output=feed.on_output)
        try:
            proc = spawn_launcher(plan.argv, {**plan.env, **pump.child_env()})
        except OSError as err:
            pump.run(lambda: True)  # closes the socket and files
            raise NbexecError(f"could not start {plan.argv[0]!r}: {err}") from err
        pump.attach_pipe(proc.stdout, "stdout")  # type: ignore[arg-type]
        pump.attach_pipe(proc.stderr, "stderr")  # type: ignore[arg-type]
        return LocalJob(proc, pump, plan.run_dir, self.find_cause), pump


class LocalJob:
    """torchrun under its guard (``proc`` is the guard): the job is its process tree."""

    job_id: str | None = None
    state: str | None = None

    def __init__(self, proc: subprocess.Popen[bytes], pump: LogPump, run_dir: Path,
                 find_cause: RootCauseFinder = find_root_cause) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self._pump = pump
        self._run_dir = run_dir
        self._find_cause = find_cause

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self) -> int:
        from nbexec.runner.process import stop_leftovers

        code = self.proc.wait()
        stop_leftovers(self.proc)  # what its guard could not stop (a guard killed outright)
        return code

    def stop(self, grace: float) -> None:
        from nbexec.runner.process import stop_job

        left = stop_job(self.proc, grace)
        if left:
            pids = ", ".join(str(p.pid) for p in left)
            raise NbexecError(
                f"could not stop every process of the job: pid {pids} still running after SIGKILL "
                "(stuck in the kernel, or run by another user); stop them by hand"
            )

    def outcome(self, exit_code: int, cancelled: bool) -> tuple[RunStatus, RootCause | None]:
        if cancelled:
            return RunStatus.KILLED, None
        if exit_code == 0:
            return RunStatus.FINISHED, None
        return RunStatus.FAILED, self._root_cause(exit_code)

    def _root_cause(self, exit_code: int) -> RootCause:
        cause = self._find_cause(self._run_dir, exit_code)
        full = self._pump.write_error
        if cause.rank is None and full is not None and full[1].errno == errno.ENOSPC:
            # the ranks could not record why either; the full disk is the likeliest reason
            path, err = full
            cause = RootCause(rank=None, exit_code=exit_code, message=(
                f"no space left on the device holding {path.parent} ({os.strerror(errno.ENOSPC)}); the job "
                "failed with it. Free space there, or choose another output dir (--output / output.dir)"))
        return cause


__all__ = ["Job", "Launcher", "LocalJob", "LocalLauncher", "Pump", "PumpFeed"]
