"""Schedulers: who runs a planned job — ``local`` (torchrun here, the default),
``slurm`` (an sbatch job) or ``azureml`` (a command job).

Chosen with ``launch.scheduler`` / ``--scheduler`` (``launch.backend`` stays
torch.distributed's gloo/nccl). Every scheduler turns the same
:class:`~nbexec.plan.LaunchPlan` into its engine's job, has a dry run that
shows exactly what would be submitted, and returns a handle with the
:class:`~nbexec.runner.handle.TrainingRun` interface (status, wait, result,
cancel, lines, events). Importing this package imports no scheduler client.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.schedulers.checks import SCHEDULERS

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan
    from nbexec.runner.handle import Finalizer
    from nbexec.runner.sinks import Sink


def scheduler_hardware(config: TrainingConfig) -> HardwareInfo | None:
    """The node a remote scheduler will give the job (None: this machine, detect it)."""
    launch = config.launch
    if launch.scheduler == "slurm":
        from nbexec.schedulers.slurm.script import slurm_node_hardware

        return slurm_node_hardware(config)
    if launch.scheduler == "azureml":
        from nbexec.schedulers.azureml.job import azureml_node_hardware

        return azureml_node_hardware(config)
    return None


def describe_scale_out(plan: LaunchPlan) -> str:
    """The scheduler's part of ``--dry-run``: peers' commands, the sbatch script, the job YAML."""
    launch = plan.config.launch
    if launch.scheduler == "slurm":
        from nbexec.schedulers.slurm.script import build_sbatch_script

        return f"scheduler:  slurm\nsbatch script:\n{build_sbatch_script(plan)}"
    if launch.scheduler == "azureml":
        from nbexec.schedulers.azureml.job import job_yaml

        return f"scheduler:  azureml\njob YAML:\n{job_yaml(plan)}"
    from nbexec.schedulers.multinode import describe_peers

    return describe_peers(plan)


def dry_run(plan: LaunchPlan) -> str:
    """What ``--dry-run`` prints; for AzureML it also writes the job YAML (path in the text)."""
    text = plan.describe()
    if plan.config.launch.scheduler == "azureml":
        from nbexec.schedulers.azureml.job import write_job_yaml

        text += f"\njob YAML written to {write_job_yaml(plan)}"
    return text


def submit(plan: LaunchPlan, *, sinks: Sequence[Sink] = (), finalizers: Sequence[Finalizer] = ()) -> Any:
    """Hand ``plan`` to its (non-local) scheduler; returns the run handle.

    Raises:
        EnvironmentCheckError: the scheduler's tools or credentials are missing.
        NbexecError: the scheduler refused the job.
    """
    name = plan.config.launch.scheduler
    if name == "slurm":
        from nbexec.schedulers.slurm.run import submit_slurm

        return submit_slurm(plan, sinks=sinks, finalizers=finalizers)
    if name == "azureml":
        from nbexec.schedulers.azureml.run import submit_azureml

        return submit_azureml(plan, sinks=sinks, finalizers=finalizers)
    raise ValueError(f"scheduler {name!r} is not submitted through nbexec.schedulers.submit")


def node_run_dirs(run_dir: Path) -> list[Path]:
    """Node 0's run dir and the other nodes' (``<run_dir>.node<R>``) that exist."""
    siblings = sorted(run_dir.parent.glob(f"{run_dir.name}.node*"))
    return [run_dir, *[p for p in siblings if p.name[len(run_dir.name) + 5 :].isdigit()]]


__all__ = ["SCHEDULERS", "describe_scale_out", "dry_run", "node_run_dirs", "scheduler_hardware", "submit"]
