"""The environment that makes a training process log into the parent's MLflow run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan
    from nbexec.tracking.tracked import TrackedRun

# Passed through from the parent's environment so the child can authenticate.
# They are secret-named (or harmless) and so redacted in command.txt; nbexec
# writes them nowhere else.
CREDENTIAL_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_WORKSPACE",
)
# A server that went away must not keep a child retrying for minutes (MLflow's
# defaults: 7 retries with exponential backoff, 120 s timeout). The parent logs
# what the child could not, from events.jsonl. A user's own setting wins.
CHILD_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def setup_mlflow_tracking_env(
    run: TrackedRun | str,
    *,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Variables to add to a training job's environment so it logs into ``run``.

    Args:
        run: the parent's :class:`~nbexec.tracking.tracked.TrackedRun`, or an MLflow
            run id in the store of the current :func:`~nbexec.tracking.setup_mlflow`.
        base_env: the environment credentials are taken from (default ``os.environ``).

    Returns:
        ``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID``, ``MLFLOW_EXPERIMENT_ID``,
        ``MLFLOW_EXPERIMENT_NAME`` (the run's experiment), the credentials
        present in ``base_env``, and short HTTP retry settings for a remote
        store. A new dict; nothing is changed in place.

    Raises:
        TrackingError: ``run`` is an id and the store cannot be reached.
    """
    experiment_name: str | None
    if isinstance(run, str):
        from nbexec.tracking.store import get_client, setup_mlflow

        uri = setup_mlflow().tracking_uri
        client = get_client(uri)
        run_id = run
        experiment_id = str(client.get_run(run_id).info.experiment_id)
        experiment_name = client.get_experiment(experiment_id).name
    else:
        uri, run_id, experiment_id = run.tracking_uri, run.run_id, str(run.experiment_id)
        # a nested run lives in its parent's experiment, which may not be the configured one
        experiment_name = run.setup.experiment_name if experiment_id == str(run.setup.experiment_id) else None
    env = store_env(uri, experiment_name, base_env=base_env)
    env.update({"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment_id})
    return env


def store_env(uri: str, experiment_name: str | None, *, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every rank needs to reach the store: the URI, the experiment's name, credentials.

    The run id is not in it: with a run opened while the job starts, the ranks
    learn it from ``tracking.json`` (see :mod:`nbexec.tracking.deferred`).
    """
    base = os.environ if base_env is None else base_env
    env = {"MLFLOW_TRACKING_URI": uri}
    if experiment_name:
        env["MLFLOW_EXPERIMENT_NAME"] = experiment_name
    env.update({name: base[name] for name in CREDENTIAL_VARS if base.get(name)})
    if uri.startswith(("http://", "https://")):
        env.update({k: v for k, v in CHILD_HTTP_DEFAULTS.items() if k not in base})
    return env


def with_tracking_env(plan: LaunchPlan, run: TrackedRun, *, child_metrics: bool = True) -> LaunchPlan:
    """A copy of ``plan`` whose child environment logs into ``run``.

    The run's variables join ``plan.env`` and ``plan.env_set`` (so command.txt
    shows ``MLFLOW_RUN_ID``); credentials join ``plan.env`` only, and
    ``LaunchPlan.recorded_env`` redacts secret-named ones.

    Args:
        child_metrics: False when the parent logs the metrics itself
            (:meth:`TrackedRun.metrics_sink`): rank 0's MetricsLogger then stays off.
    """
    from dataclasses import replace

    from nbexec.tracking.child_logger import ENV_CHILD_METRICS

    added = setup_mlflow_tracking_env(run, base_env=plan.env)
    added[ENV_CHILD_METRICS] = "1" if child_metrics else "0"
    shown = {k: v for k, v in added.items() if k not in CREDENTIAL_VARS}
    return replace(plan, env={**plan.env, **added}, env_set={**plan.env_set, **shown})
