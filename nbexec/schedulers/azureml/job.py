"""Build an AzureML command job from a launch plan; write and read back its YAML.

    job = build_command_job(plan)          # azure.ai.ml.entities.Command
    path = write_job_yaml(plan)            # <output_dir>/azureml/<run_name>/job.yaml

The job runs the same target as a local launch under AzureML's PyTorch
distribution (``instance_count`` = ``launch.nnodes``, ``process_count_per_instance``
= ``nproc``); AzureML starts the processes and sets RANK/WORLD_SIZE/MASTER_*.
Each process starts in :mod:`.entry`, which points nbexec's contract at the
job's inputs (the resolved config, the data folder) and ``./outputs``.
AzureML gives the job its own MLflow run (``MLFLOW_RUN_ID``); rank 0 logs
its metrics there itself. Secret config values are not put in the job (its
YAML is stored by AzureML): give them through the workspace's key vault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbexec.contract as contract
from nbexec.config_fields import MAX_NPROC
from nbexec.errors import EnvironmentCheckError
from nbexec.schedulers.azureml.options import azureml_options

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan

ENTRY_MODULE = "nbexec.schedulers.azureml.entry"
JOB_DIR = "azureml"  # <output_dir>/azureml/<run_name>/{job.yaml, config.yaml}
# A curated AzureML environment with PyTorch; nbexec must be installed in it
# (or in the code folder's requirements) for the job to import it.
DEFAULT_ENVIRONMENT = "azureml://registries/azureml/environments/acpt-pytorch-2.2-cuda12.1/labels/latest"


def require_azure_ai_ml() -> Any:
    """Import ``azure.ai.ml``, or say how to install it."""
    try:
        import azure.ai.ml as aml
    except ImportError as err:
        raise EnvironmentCheckError([(
            "launch.scheduler is azureml but azure-ai-ml is not installed; "
            "install the extra: pip install 'nbexec[azureml]'"
        )]) from err
    return aml


def azureml_node_hardware(config: TrainingConfig) -> HardwareInfo:
    """The plan's view of an AzureML node: ``launch.azureml.gpus_per_node`` GPUs
    (``nproc: auto`` = one process per GPU, nccl), else CPU processes (``auto``: 1)."""
    from nbexec.hardware import GPUInfo, HardwareInfo

    gpus = azureml_options(config).gpus_per_node or 0
    nproc = config.launch.nproc
    cpus = min(MAX_NPROC, int(nproc)) if nproc != "auto" else 1
    return HardwareInfo(
        gpus=tuple(GPUInfo(i, "AzureML GPU (gpus_per_node)", 0, f"azureml-gpu-{i}", None) for i in range(gpus)),
        cpu_count=cpus, platform="azureml", gpu_source="azureml" if gpus else "none",
        gpu_error=None if gpus else "no GPUs given (launch.azureml.gpus_per_node)",
        cuda_visible_devices=None,
    )


def job_dir(plan: LaunchPlan) -> Path:
    return plan.run_dir.parent / JOB_DIR / plan.run_name


def _target(plan: LaunchPlan) -> list[str]:
    launch = plan.config.launch
    if launch.entrypoint is not None:
        return [launch.entrypoint]
    return ["-m", str(launch.target_module)]


def job_command(plan: LaunchPlan, *, with_data: bool) -> str:
    """The job's command line (AzureML runs it in a shell, per process; values quoted)."""
    import shlex

    argv = ["python", "-m", ENTRY_MODULE, "--run-name", plan.run_name, "--config", "${{inputs.config}}"]
    if with_data:
        argv += ["--data", "${{inputs.data}}"]
    quoted = [a if a.startswith("${{") else shlex.quote(a) for a in argv]
    target = [shlex.quote(a) for a in (*_target(plan), *plan.config.launch.args)]
    return " ".join([*quoted, "--", *target])


def _data_path(plan: LaunchPlan) -> str | None:
    path = plan.config.data.get("path")
    return str(path) if isinstance(path, str) and path else None


def job_spec(plan: LaunchPlan, config_file: Path | None = None) -> dict[str, Any]:
    """The command job as AzureML's YAML schema has it (plain data, nothing imported).

    Args:
        config_file: the resolved config to upload as the ``config`` input
            (default: ``<output_dir>/azureml/<run_name>/config.yaml``).
    """
    from nbexec.redact import is_secret_name

    config = plan.config
    options = azureml_options(config)
    config_file = config_file or job_dir(plan) / contract.CONFIG_FILE
    inputs: dict[str, Any] = {"config": {"type": "uri_file", "path": str(Path(config_file).absolute())}}
    data = _data_path(plan)
    if data is not None:
        inputs["data"] = {"type": "uri_folder", "path": str(Path(data).absolute())}
    env = {
        # no nbexec parent in the job: rank 0 logs its metrics into the job's own
        # MLflow run (AzureML sets MLFLOW_TRACKING_URI and MLFLOW_RUN_ID)
        contract.ENV_BACKEND: str(plan.backend),
        "MLFLOW_EXPERIMENT_NAME": options.experiment or config.tracking.experiment,
        **dict(config.launch.env),
    }
    if config.launch.omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = str(config.launch.omp_num_threads)
    resources: dict[str, Any] = {"instance_count": config.launch.max_nodes}
    if options.instance_type:
        resources["instance_type"] = options.instance_type
    spec: dict[str, Any] = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
        "type": "command",
        "display_name": options.display_name or plan.run_name,
        "experiment_name": options.experiment or config.tracking.experiment,
        "code": str(Path(options.code or os.getcwd()).absolute()),
        "command": job_command(plan, with_data=data is not None),
        "environment": options.environment or DEFAULT_ENVIRONMENT,
        "resources": resources,
        "distribution": {"type": "pytorch", "process_count_per_instance": plan.nproc},
        "inputs": inputs,
        # a secret-named launch.env value must not land in the job's YAML (AzureML stores it)
        "environment_variables": {k: v for k, v in env.items() if not is_secret_name(k)},
        "tags": {"nbexec.run_name": plan.run_name, "nbexec.config_hash": config.config_hash},
    }
    if options.compute:
        spec["compute"] = f"azureml:{options.compute}"
    return spec


def job_yaml(plan: LaunchPlan, config_file: Path | None = None) -> str:
    """The job's YAML, as ``--dry-run`` shows it (nothing written)."""
    import yaml

    return yaml.safe_dump(job_spec(plan, config_file), sort_keys=False)


def build_command_job(plan: LaunchPlan, config_file: Path | None = None) -> Any:
    """The ``azure.ai.ml`` command job for ``plan``, read from its YAML (nothing submitted).

    Raises:
        EnvironmentCheckError: azure-ai-ml is not installed.
    """
    import io

    aml = require_azure_ai_ml()
    return aml.load_job(io.StringIO(job_yaml(plan, config_file)))


def write_job_yaml(plan: LaunchPlan) -> Path:
    """Write ``config.yaml`` (secrets redacted) and ``job.yaml`` under ``<output_dir>/azureml/<run_name>/``.

    Returns:
        The job YAML's path (``az ml job create -f`` or :func:`azure.ai.ml.load_job` read it).
    """
    import yaml

    from nbexec.redact import split_secrets

    folder = job_dir(plan)
    folder.mkdir(parents=True, exist_ok=True)
    clean, _ = split_secrets(plan.config.to_dict())
    (folder / contract.CONFIG_FILE).write_text(yaml.safe_dump(clean, sort_keys=False))
    path = folder / "job.yaml"
    path.write_text(job_yaml(plan, config_file=folder / contract.CONFIG_FILE))
    return path
