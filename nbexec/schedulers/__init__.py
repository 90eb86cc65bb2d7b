"""Schedulers: who runs a planned job — ``local`` (torchrun here, the default; one or more nodes),
``slurm`` (an sbatch job) or ``azureml`` (a command job).

Chosen with ``launch.scheduler`` / ``--scheduler`` (``launch.backend`` stays
torch.distributed's gloo/nccl). Every scheduler is a
:class:`~nbexec.schedulers.api.Scheduler`: the same
:class:`~nbexec.plan.LaunchPlan` in, a dry run as a value, a launcher for the
one run handle (:class:`~nbexec.runner.handle.TrainingRun`: status, wait,
result, cancel, lines, events). The registry below names them by module, so
importing this package imports no scheduler client.

Adding a backend: a module with a ``Scheduler`` subclass, and one line in
:data:`SCHEDULERS` (or :func:`register` at run time, e.g. from a plugin).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from nbexec.errors import ConfigError

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.schedulers.api import Scheduler

# launch.scheduler -> "module:Scheduler subclass", imported only when chosen
SCHEDULERS: dict[str, str] = {
    "local": "nbexec.schedulers.local:LocalScheduler",
    "slurm": "nbexec.schedulers.slurm.scheduler:SlurmScheduler",
    "azureml": "nbexec.schedulers.azureml.scheduler:AzureMLScheduler",
}
MULTINODE = "nbexec.schedulers.multinode:MultiNodeScheduler"  # "local" with launch.nnodes > 1

_registered: dict[str, Callable[[], Scheduler]] = {}


def register(name: str, factory: Callable[[], Scheduler]) -> None:
    """Make ``launch.scheduler: <name>`` run jobs with ``factory()`` (a Scheduler class works)."""
    _registered[name] = factory


def scheduler_names() -> list[str]:
    """Every name ``launch.scheduler`` accepts."""
    return [*SCHEDULERS, *(n for n in _registered if n not in SCHEDULERS)]


def get_scheduler(config: TrainingConfig) -> Scheduler:
    """The scheduler that runs ``config``'s job.

    Raises:
        ConfigError: ``launch.scheduler`` names no scheduler (the names that exist, a did-you-mean).
    """
    name = str(config.launch.scheduler)
    if name in _registered:
        return _registered[name]()
    if name == "local" and config.launch.is_multinode:
        return _load(MULTINODE)()
    if name not in SCHEDULERS:
        from nbexec.config_fields import did_you_mean

        names = scheduler_names()
        raise ConfigError(
            f"launch.scheduler = {name!r} is not allowed; allowed: {', '.join(names)}{did_you_mean(name, names)}"
            " (launch.backend is torch.distributed's gloo/nccl; launch.scheduler runs the job; a plugin's scheduler "
            "must be registered first: nbexec.schedulers.register)",
            field="launch.scheduler", value=name,
        )
    return _load(SCHEDULERS[name])()


def check_options(config: TrainingConfig) -> None:
    """Check every built-in scheduler's options (``launch.slurm``, ``launch.azureml``) whichever runs:
    a bad value is refused even while another scheduler is chosen.

    Raises:
        ConfigError: naming ``launch.<scheduler>.<key>``, the value and what is allowed.
    """
    for target in SCHEDULERS.values():
        _load(target)().options(config)
    chosen = get_scheduler(config)
    chosen.options(config)


def _load(target: str) -> Callable[[], Scheduler]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


__all__ = ["MULTINODE", "SCHEDULERS", "check_options", "get_scheduler", "register", "scheduler_names"]
