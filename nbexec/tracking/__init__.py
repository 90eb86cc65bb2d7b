"""MLflow tracking: one run per training job, opened by the parent, logged into by rank 0.

- :func:`setup_mlflow` — the single place that configures MLflow (idempotent).
- :func:`create_training_mlflow_run` — the job's run, open before the job starts;
  :func:`tracking_finalizer` ends it from the job's result.
- :func:`setup_mlflow_tracking_env` / :func:`with_tracking_env` — the child's
  environment for logging into that run.
- :class:`MetricsLogger` — the child's batched, asynchronous metric logger;
  :class:`MlflowMetricsSink` — the same fed in the parent from the job's events.
- :func:`create_training_child_run` — nested runs (HPO trials).
- :func:`add_training_tags` — every tag nbexec sets.

Importing this package does not import mlflow; the functions import it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "TrackingSetup": "nbexec.tracking.store",
    "TrackingWarning": "nbexec.tracking.store",
    "setup_mlflow": "nbexec.tracking.store",
    "current_setup": "nbexec.tracking.store",
    "TrackedRun": "nbexec.tracking.tracked",
    "create_training_mlflow_run": "nbexec.tracking.create",
    "create_training_child_run": "nbexec.tracking.create",
    "tracking_finalizer": "nbexec.tracking.tracked",
    "setup_mlflow_tracking_env": "nbexec.tracking.env",
    "with_tracking_env": "nbexec.tracking.env",
    "add_training_tags": "nbexec.tracking.tags",
    "build_training_tags": "nbexec.tracking.tags",
    "training_params": "nbexec.tracking.params",
    "MetricsLogger": "nbexec.tracking.child_logger",
    "MlflowMetricsSink": "nbexec.tracking.sink",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from nbexec.tracking.child_logger import MetricsLogger
    from nbexec.tracking.create import create_training_child_run, create_training_mlflow_run
    from nbexec.tracking.env import setup_mlflow_tracking_env, with_tracking_env
    from nbexec.tracking.params import training_params
    from nbexec.tracking.sink import MlflowMetricsSink
    from nbexec.tracking.store import TrackingSetup, TrackingWarning, current_setup, setup_mlflow
    from nbexec.tracking.tags import add_training_tags, build_training_tags
    from nbexec.tracking.tracked import TrackedRun, tracking_finalizer
