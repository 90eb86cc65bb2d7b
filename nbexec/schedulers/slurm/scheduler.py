"""``launch.scheduler: slurm``: the plan becomes an sbatch job that runs torchrun on the allocated nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec.errors import EnvironmentCheckError
from nbexec.schedulers.api import DryRun, Scheduler, TrackingMode
from nbexec.schedulers.slurm.submit import SLURM_STATES, SlurmLauncher

if TYPE_CHECKING:
    from nbexec.config import LaunchConfig, TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan
    from nbexec.schedulers.slurm.options import SlurmOptions

# Placeholders in the nodes' torchrun arguments, filled in on each node by the
# job's node program (nbexec.schedulers.slurm.node): the first node's host name
# and whether this node is the rendezvous host.
SLURM_HEAD = "{head}"
SLURM_IS_HOST = "{is_host}"
DEFAULT_RDZV_PORT = 29500


class SlurmScheduler(Scheduler):
    """An sbatch job; the run dir must be on a file system the nodes share with this machine."""

    name = "slurm"
    # The job may outlive this process: its run is opened before submission and
    # its id goes into the job's environment (no waiting on this machine).
    tracking = TrackingMode.BEFORE
    states = SLURM_STATES

    def options(self, config: TrainingConfig) -> SlurmOptions:
        from nbexec.schedulers.slurm.options import slurm_options

        return slurm_options(config)

    def hardware(self, config: TrainingConfig) -> HardwareInfo:
        from nbexec.schedulers.slurm.script import slurm_node_hardware

        return slurm_node_hardware(config)

    def rendezvous_args(self, launch: LaunchConfig, *, nproc: int, run_name: str) -> list[str]:
        rdzv_id = launch.rdzv_id or run_name
        common = ["--nnodes", str(launch.nnodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
        if not launch.is_multinode:
            return [*common, "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", rdzv_id]
        from nbexec.schedulers.slurm.options import SlurmOptions

        port = SlurmOptions.from_config(launch.slurm).rdzv_port or DEFAULT_RDZV_PORT
        return [*common, "--rdzv-endpoint", f"{SLURM_HEAD}:{port}", "--rdzv-id", rdzv_id,
                "--rdzv-conf", f"is_host={SLURM_IS_HOST}", "--local-addr", SLURM_HEAD]

    def check(self, plan: LaunchPlan) -> list[str]:
        from nbexec.schedulers.slurm.commands import check_tools

        try:
            check_tools(plan.env)
        except EnvironmentCheckError as err:
            return err.problems
        return []

    def dry_run(self, plan: LaunchPlan) -> DryRun:
        from nbexec.schedulers.slurm.script import build_sbatch_script

        return DryRun(f"{plan.describe()}\nscheduler:  slurm\nsbatch script:\n{build_sbatch_script(plan)}")

    def launcher(self, plan: LaunchPlan) -> SlurmLauncher:
        return SlurmLauncher()


__all__ = ["DEFAULT_RDZV_PORT", "SLURM_HEAD", "SLURM_IS_HOST", "SlurmScheduler"]
