"""nbexec's exceptions: one root, each subclass also the matching builtin.

Every message says what failed, the offending value, what is allowed, and
where to look next, so a notebook user can act on it without a debugger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class NbexecError(Exception):
    """Root of every error nbexec raises on purpose."""


class ConfigError(NbexecError, ValueError):
    """A config value is missing, of the wrong type, or not allowed.

    Attributes:
        field: dotted path of the offending key (``"launch.nproc"``), or ``""``.
        value: the value that was rejected.
    """

    def __init__(self, message: str, *, field: str = "", value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class EnvironmentCheckError(NbexecError, RuntimeError):
    """The machine cannot run the planned job; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the training environment is not ready ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}); nothing was started:\n{lines}"
        )


class RunDirectoryTaken(EnvironmentCheckError, FileExistsError):
    """The run directory already holds files: an earlier run, or another job given the same
    run name that got there first. Nothing of it is touched, and nothing was started.

    Also a ``FileExistsError``, which is what writing the run dir raised before.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        super().__init__([
            f"run directory {self.run_dir} already exists and is not empty; choose another output.run_name "
            "(or leave it unset for a fresh one) so no earlier run is overwritten"
        ])

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        return (type(self), (self.run_dir,))


@dataclass(frozen=True)
class RootCause:
    """Why the first failing rank failed.

    ``exc_type``/``message``/``traceback``/``where`` come from the rank's own
    error record (written by nbexec's worker bootstrap), so they exist for
    plain scripts too.
    When a rank died without a Python exception (signal, ``os._exit``), they are
    empty and ``message`` describes the exit.
    """

    rank: int | None
    exit_code: int | None
    exc_type: str = ""
    message: str = ""
    traceback: str = ""
    time: float | None = None
    where: str = ""  # file:line of the innermost frame in the user's own code, when known

    def to_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "exit_code": self.exit_code,
            "exc_type": self.exc_type,
            "message": self.message,
            "traceback": self.traceback,
            "time": self.time,
            "where": self.where,
        }

    def headline(self) -> str:
        if self.rank is not None:
            where = f"rank {self.rank}"
        else:  # a stalled job nbexec stopped has no one rank to blame
            where = "the job" if self.exc_type == "Stall" else "the launcher"
        what = f"{self.exc_type}: {self.message}" if self.exc_type else self.message
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""  # None: e.g. AzureML
        return f"{where} failed{code}: {what}".rstrip(": ")


@dataclass
class TrainingFailed(NbexecError, RuntimeError):
    """The job ended with a failure.

    Attributes:
        run_name: the run that failed.
        root_cause: the first failing rank, its exit code, exception and traceback.
        log_paths: per-rank log files (and the launcher's), to read the whole story.
        log_tail: the last lines of the failing rank's log.
    """

    run_name: str
    root_cause: RootCause
    log_paths: dict[str, Path] = field(default_factory=dict)
    log_tail: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def rank(self) -> int | None:
        return self.root_cause.rank

    @property
    def exit_code(self) -> int | None:
        return self.root_cause.exit_code

    def __str__(self) -> str:
        rc = self.root_cause
        parts = [f"training run {self.run_name!r}: {rc.headline()}"]
        if rc.traceback:
            parts.append(rc.traceback.rstrip())
        elif self.log_tail:
            parts.append("last lines of its log:\n" + "\n".join(self.log_tail))
        if self.log_paths:
            logs = "\n".join(f"  {name}: {path}" for name, path in self.log_paths.items())
            parts.append("logs:\n" + logs)
        return "\n".join(parts)


class TrainingCancelled(NbexecError, RuntimeError):
    """The job was stopped by ``cancel()`` or an interrupt before it finished."""


class TrackingError(NbexecError, RuntimeError):
    """MLflow could not be configured or reached."""


class BackupError(NbexecError, OSError):
    """A backup could not be written or verified."""
