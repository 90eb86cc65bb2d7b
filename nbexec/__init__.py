"""nbexec: run real PyTorch DDP training from a notebook.

Public names are loaded lazily (PEP 562) so ``import nbexec`` stays fast and
imports neither torch, mlflow, IPython nor ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbexec._lazy import lazy_exports
from nbexec.version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "NbexecError": "nbexec.errors",
    "ConfigError": "nbexec.errors",
    "EnvironmentCheckError": "nbexec.errors",
    "TrainingFailed": "nbexec.errors",
    "TrainingCancelled": "nbexec.errors",
    "TrackingError": "nbexec.errors",
    "BackupError": "nbexec.errors",
    "RootCause": "nbexec.errors",
    # config
    "TrainingConfig": "nbexec.config",
    "load_config": "nbexec.config",
    # hardware
    "HardwareInfo": "nbexec.hardware",
    "GPUInfo": "nbexec.hardware",
    "detect_hardware": "nbexec.hardware",
    # launch plan and checks
    "LaunchPlan": "nbexec.plan",
    "plan_training": "nbexec.plan",
    "build_training_command": "nbexec.plan",
    "setup_training_environment": "nbexec.plan",
    "should_use_ddp": "nbexec.plan",
    "resolve_nproc": "nbexec.plan",
    "verify_training_environment": "nbexec.checks",
    # running
    "RunStatus": "nbexec.runner.handle",
    "TrainingRun": "nbexec.runner.handle",
    "LogLine": "nbexec.runner.lines",
    "TrainingResult": "nbexec.result",
    "launch": "nbexec.executor",
    "execute_training_subprocess": "nbexec.executor",
    "build_training_run_name_with_fallback": "nbexec.naming",
    # tracking (MLflow)
    "setup_mlflow": "nbexec.tracking",
    "create_training_mlflow_run": "nbexec.tracking",
    "create_training_child_run": "nbexec.tracking",
    "setup_mlflow_tracking_env": "nbexec.tracking",
    "add_training_tags": "nbexec.tracking",
    # backup and restore
    "BackupRecord": "nbexec.backup",
    "immediate_backup_if_needed": "nbexec.backup",
    "backup_run": "nbexec.backup",
    "verify_backup": "nbexec.backup",
    "restore": "nbexec.backup",
    "is_colab": "nbexec.backup",
    "mount_drive": "nbexec.backup",
    # notebook widgets (import ipywidgets when first used)
    "TrainingPanel": "nbexec.notebook.panel",
    # HPO sweeps (the nbexec[hpo] extra) and lineage
    "run_hpo": "nbexec.hpo",
    "run_final_training_workflow": "nbexec.hpo",
    "get_or_compute_study_key_hash": "nbexec.hpo",
    "get_or_compute_trial_key_hash": "nbexec.hpo",
    "extract_lineage_from_best_model": "nbexec.lineage",
    "apply_lineage_tags": "nbexec.lineage",
    "Lineage": "nbexec.lineage",
    # child side (also importable from nbexec.child)
    "RunContext": "nbexec.child",
    "create_run_context": "nbexec.child",
    "init_process_group_if_needed": "nbexec.child",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbexec``: registers the magics (the notebook layer loads IPython)."""
    from nbexec.notebook.magics import register

    register(ipython)


if TYPE_CHECKING:  # static names for type checkers and IDEs
    from nbexec.backup import (
        BackupRecord,
        backup_run,
        immediate_backup_if_needed,
        is_colab,
        mount_drive,
        restore,
        verify_backup,
    )
    from nbexec.child import RunContext, create_run_context, init_process_group_if_needed
    from nbexec.config import TrainingConfig, load_config
    from nbexec.errors import (
        BackupError,
        ConfigError,
        EnvironmentCheckError,
        NbexecError,
        RootCause,
        TrackingError,
        TrainingCancelled,
        TrainingFailed,
    )
    from nbexec.hardware import GPUInfo, HardwareInfo, detect_hardware
    from nbexec.hpo import (
        get_or_compute_study_key_hash,
        get_or_compute_trial_key_hash,
        run_final_training_workflow,
        run_hpo,
    )
    from nbexec.lineage import Lineage, apply_lineage_tags, extract_lineage_from_best_model
    from nbexec.notebook.panel import TrainingPanel
