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
    # the run: start one, its handle, its result
    "launch": "nbexec.executor",
    "prepare": "nbexec.executor",
    "TrainingRun": "nbexec.runner.handle",
    "RunStatus": "nbexec.result",
    "TrainingResult": "nbexec.result",
    # the seed's names: execution
    "execute_training_subprocess": "nbexec.executor",
    "build_training_command": "nbexec.plan",
    "setup_training_environment": "nbexec.plan",
    "verify_training_environment": "nbexec.checks",
    # ... distributed
    "create_run_context": "nbexec.child",
    "should_use_ddp": "nbexec.plan",
    "detect_hardware": "nbexec.hardware",
    "init_process_group_if_needed": "nbexec.child",
    # ... tracking (MLflow)
    "setup_mlflow": "nbexec.tracking",
    "create_training_mlflow_run": "nbexec.tracking",
    "create_training_child_run": "nbexec.tracking",
    "setup_mlflow_tracking_env": "nbexec.tracking",
    # ... lineage and tags
    "extract_lineage_from_best_model": "nbexec.lineage",
    "apply_lineage_tags": "nbexec.lineage",
    "add_training_tags": "nbexec.tracking",
    "build_training_run_name_with_fallback": "nbexec.naming",
    "get_or_compute_study_key_hash": "nbexec.hpo",
    "get_or_compute_trial_key_hash": "nbexec.hpo",
    # ... high level
    "run_final_training_workflow": "nbexec.workflow",
    "immediate_backup_if_needed": "nbexec.backup",
    # sweeps, backups and the panel, as the README shows them
    "run_hpo": "nbexec.hpo",
    "restore": "nbexec.backup",
    "verify_backup": "nbexec.backup",
    "BackupRecord": "nbexec.backup",
    "mount_drive": "nbexec.backup",
    "TrainingPanel": "nbexec.notebook.panel",  # imports ipywidgets when first used
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbexec``: registers the magics (the notebook layer loads IPython)."""
    from nbexec.notebook.magics import register

    register(ipython)


if TYPE_CHECKING:  # static names for type checkers and IDEs (tests/core/test_exports.py: all of _EXPORTS)
    from nbexec.backup import BackupRecord, immediate_backup_if_needed, mount_drive, restore, verify_backup
    from nbexec.checks import verify_training_environment
    from nbexec.child import create_run_context, init_process_group_if_needed
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
    from nbexec.executor import execute_training_subprocess, launch, prepare
    from nbexec.hardware import detect_hardware
    from nbexec.hpo import get_or_compute_study_key_hash, get_or_compute_trial_key_hash, run_hpo
    from nbexec.lineage import apply_lineage_tags, extract_lineage_from_best_model
    from nbexec.naming import build_training_run_name_with_fallback
    from nbexec.notebook.panel import TrainingPanel
    from nbexec.plan import build_training_command, setup_training_environment, should_use_ddp
    from nbexec.result import RunStatus, TrainingResult
    from nbexec.runner.handle import TrainingRun
    from nbexec.tracking import (
        add_training_tags,
        create_training_child_run,
        create_training_mlflow_run,
        setup_mlflow,
        setup_mlflow_tracking_env,
    )
    from nbexec.workflow import run_final_training_workflow
