"""The scheduler interface: who runs a planned job, and how.

A :class:`Scheduler` turns a :class:`~nbexec.plan.LaunchPlan` into a running
job. Each one owns:

- the hardware to plan for (:meth:`Scheduler.hardware`: this machine, or the
  node a cluster will give);
- torchrun's rendezvous arguments, when they are not the single-node default;
- its dry run, returned as a value (:class:`DryRun`) with no side effects;
- the :class:`~nbexec.runner.job.Launcher` a run handle starts the job with;
- one table from its backend's states to :class:`~nbexec.result.RunStatus`;
- how the job's MLflow run is attached (:class:`TrackingMode`).

The run handle, the tracking, the backup and the views are the same for all
of them (see :func:`nbexec.executor.launch`). Adding a backend is one module
with a :class:`Scheduler` subclass and one line in the registry
(:data:`nbexec.schedulers.SCHEDULERS`), or :func:`nbexec.schedulers.register`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from nbexec.config import LaunchConfig, TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan
    from nbexec.result import RunStatus
    from nbexec.runner.job import Launcher


class TrackingMode(str, enum.Enum):
    """How a scheduler's jobs get their MLflow run."""

    DEFERRED = "deferred"  # opened while the job starts; ranks wait for tracking.json (needs the launcher alive)
    BEFORE = "before"  # opened before the job is submitted; its id goes in the job's environment
    OWN = "own"  # the backend tracks the job itself (AzureML's workspace run); nbexec opens none

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DryRun:
    """What a dry run shows, and the files it would write (nothing is written until :meth:`write`).

    Attributes:
        text: the plan as a person reads it, with the scheduler's own part.
        files: ``{path: content}`` the scheduler writes for the job (an AzureML job YAML).
    """

    text: str
    files: Mapping[Path, str] = field(default_factory=dict)

    def write(self) -> list[Path]:
        """Write :attr:`files` (folders made as needed); returns their paths."""
        for path, content in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        return list(self.files)

    def __str__(self) -> str:
        return self.text


class Scheduler(ABC):
    """One backend that runs planned jobs (see the module docstring)."""

    name: ClassVar[str]
    tracking: ClassVar[TrackingMode] = TrackingMode.DEFERRED
    # The backend's own state names -> the run's status (empty: a local job has none).
    states: ClassVar[Mapping[str, RunStatus]] = {}

    def hardware(self, config: TrainingConfig) -> HardwareInfo | None:
        """The machine to plan the job for; None: this machine (detected)."""
        return None

    def rendezvous_args(self, launch: LaunchConfig, *, nproc: int, run_name: str) -> list[str] | None:
        """torchrun's ``--nnodes ... --rdzv-*`` arguments; None: one node on this machine."""
        return None

    def options(self, config: TrainingConfig) -> object | None:
        """Its typed options (``launch.<name>``), checked; None when it has none.

        Raises:
            ConfigError: naming ``launch.<name>.<key>``, the value and what is allowed.
        """
        return None

    def check(self, plan: LaunchPlan) -> list[str]:
        """What stops the job from being submitted (tools, credentials), each with its fix; [] when ready."""
        return []

    def dry_run(self, plan: LaunchPlan) -> DryRun:
        """What ``--dry-run`` shows (a value: nothing is written or started)."""
        return DryRun(plan.describe())

    @abstractmethod
    def launcher(self, plan: LaunchPlan) -> Launcher:
        """What the run handle starts the job with (nothing happens until the run starts)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


__all__ = ["DryRun", "Scheduler", "TrackingMode"]
