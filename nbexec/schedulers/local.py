"""The default scheduler: torchrun on this machine, under nbexec's guard (``launch.scheduler: local``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec.runner.job import LocalLauncher
from nbexec.schedulers.api import Scheduler, TrackingMode

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan


class LocalScheduler(Scheduler):
    """One node: this machine's GPUs (or CPU cores with gloo)."""

    name = "local"
    tracking = TrackingMode.DEFERRED

    def launcher(self, plan: LaunchPlan) -> LocalLauncher:
        return LocalLauncher()


__all__ = ["LocalScheduler"]
