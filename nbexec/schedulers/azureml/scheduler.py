"""``launch.scheduler: azureml``: the plan becomes an AzureML command job (``pip install 'nbexec[azureml]'``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbexec.errors import EnvironmentCheckError
from nbexec.result import RunStatus
from nbexec.schedulers.api import DryRun, Scheduler, TrackingMode

if TYPE_CHECKING:
    from nbexec.config import LaunchConfig, TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan
    from nbexec.schedulers.azureml.options import AzureMLOptions
    from nbexec.schedulers.azureml.submit import AzureMLLauncher


class AzureMLScheduler(Scheduler):
    """A command job in an AzureML workspace; AzureML's PyTorch distribution starts the ranks."""

    name = "azureml"
    tracking = TrackingMode.OWN  # metrics go to the job's own MLflow run in the workspace

    def __init__(self) -> None:
        self._client: Any = None  # connected by check(), used by the launcher

    @property
    def states(self) -> dict[str, RunStatus]:  # type: ignore[override]
        from nbexec.schedulers.azureml.submit import AZUREML_STATES

        return AZUREML_STATES

    def options(self, config: TrainingConfig) -> AzureMLOptions:
        from nbexec.schedulers.azureml.options import azureml_options

        return azureml_options(config)

    def hardware(self, config: TrainingConfig) -> HardwareInfo:
        from nbexec.schedulers.azureml.job import azureml_node_hardware

        return azureml_node_hardware(config)

    def rendezvous_args(self, launch: LaunchConfig, *, nproc: int, run_name: str) -> list[str]:
        # for the record only: AzureML's PyTorch distribution starts the ranks
        rdzv_id = launch.rdzv_id or run_name
        common = ["--nnodes", str(launch.nnodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
        if not launch.is_multinode:
            return [*common, "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", rdzv_id]
        return [*common, "--rdzv-endpoint", "$MASTER_ADDR:$MASTER_PORT", "--rdzv-id", rdzv_id]

    def check(self, plan: LaunchPlan) -> list[str]:
        """The workspace, the credentials and azure-ai-ml: connected now, so nothing is submitted without them."""
        from nbexec.schedulers.azureml.client import connect

        try:
            self._client = connect(plan.config.launch.azureml, plan.env)
        except EnvironmentCheckError as err:
            return err.problems
        return []

    def dry_run(self, plan: LaunchPlan) -> DryRun:
        """The plan and the job YAML; :meth:`DryRun.write` writes it with its config beside it
        (for ``az ml job create -f``), as ``--dry-run`` does."""
        import yaml

        from nbexec.redact import split_secrets
        from nbexec.schedulers.azureml.job import job_dir, job_yaml

        folder = job_dir(plan)
        config_file, path = folder / "config.yaml", folder / "job.yaml"
        clean, _ = split_secrets(plan.config.to_dict())
        files = {config_file: yaml.safe_dump(clean, sort_keys=False), path: job_yaml(plan, config_file=config_file)}
        return DryRun(f"{plan.describe()}\nscheduler:  azureml\njob YAML:\n{job_yaml(plan)}\n"
                      f"job YAML written to {path}", files=files)

    def launcher(self, plan: LaunchPlan) -> AzureMLLauncher:
        from nbexec.schedulers.azureml.submit import AzureMLLauncher

        return AzureMLLauncher(self._client)


__all__ = ["AzureMLScheduler"]
