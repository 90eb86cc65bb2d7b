"""Open the MLflow run of a training job (or of an HPO trial), before anything is spawned.

    tracked = create_training_mlflow_run(plan.config, plan=plan)   # TrackingError: nothing started
    plan = with_tracking_env(plan, tracked)                          # the child logs into it
    run = TrainingRun(plan, finalizers=[tracking_finalizer(tracked)])
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbexec.errors import TrackingError
from nbexec.redact import Scrubber
from nbexec.result import RunStatus
from nbexec.tracking.abandoned import launcher_tags
from nbexec.tracking.batching import log_batch_chunked
from nbexec.tracking.params import flatten_params, training_params
from nbexec.tracking.store import get_client, setup_mlflow
from nbexec.tracking.tags import TAG_PARENT_RUN, build_training_tags
from nbexec.tracking.tracked import TrackedRun, one_line

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.plan import LaunchPlan


def create_training_mlflow_run(
    config: TrainingConfig | Mapping[str, Any] | None = None,
    *,
    run_name: str | None = None,
    plan: LaunchPlan | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, object] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    notebook_path: str | os.PathLike[str] | None = None,
    start_time: float | None = None,
    params: Mapping[str, Any] | None = None,
) -> TrackedRun:
    """Open the MLflow run of a training job, before the job starts.

    Configures MLflow itself (:func:`setup_mlflow`) when nobody has. The run
    gets the flattened trainer config as params (secrets redacted) and
    nbexec's tags. Use the returned object as a context manager, or end it with
    :meth:`TrackedRun.end` / :func:`tracking_finalizer`.

    Args:
        config: the training config (default: ``plan.config``).
        run_name: the MLflow run name (default: ``plan.run_name``).
        plan: the launch plan (resolved nproc, command, hardware, run dir).
        parent_run_id: nest the run under this one (``mlflow.parentRunId``).
        tags: more tags (secret-named ones are redacted).
        tracking_uri, experiment: as for :func:`setup_mlflow`.
        notebook_path: the launching notebook (``mlflow.source.name``).
        start_time: when the job started (seconds since the epoch; default: now),
            for a run opened while the job already runs.
        params: more params beside the config's (e.g. an HPO trial's; nested dicts flattened).

    Returns:
        The open :class:`TrackedRun`.

    Raises:
        TrackingError: the store cannot be reached or refuses the run.
    """
    from nbexec.config import TrainingConfig, load_config

    if config is None and plan is not None:
        cfg = plan.config
    else:
        cfg = config if isinstance(config, TrainingConfig) else load_config(config)
    all_params = training_params(cfg, plan)
    all_params.update(flatten_params(params or {}))
    return _open_run(
        cfg, params=all_params, run_name=run_name, plan=plan, parent_run_id=parent_run_id,
        tags=tags, tracking_uri=tracking_uri, experiment=experiment, notebook_path=notebook_path,
        start_time=start_time,
    )


def create_training_child_run(
    parent_run_id: str,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, object] | None = None,
    config: TrainingConfig | None = None,
    plan: LaunchPlan | None = None,
    tracking_uri: str | None = None,
) -> TrackedRun:
    """Open a run nested under ``parent_run_id`` (an HPO trial, a workflow step).

    It goes to the parent's experiment, tagged ``mlflow.parentRunId``. Give
    ``params`` (e.g. the trial's hyperparameters; nested dicts are flattened,
    secrets redacted) and/or the ``config`` that trial trains with. Launch a
    job into it as into any :class:`TrackedRun`.

    Returns:
        The open :class:`TrackedRun` (``.run_id``; a context manager).

    Raises:
        TrackingError: the store cannot be reached or the parent run does not exist.
    """
    if config is None and plan is not None:
        config = plan.config
    all_params = training_params(config, plan) if config is not None else {}
    all_params.update(flatten_params(params or {}))
    return _open_run(
        config, params=all_params, run_name=run_name, plan=plan, parent_run_id=parent_run_id,
        tags=tags, tracking_uri=tracking_uri, experiment=None, notebook_path=None,
    )


def _open_run(
    config: TrainingConfig | None,
    *,
    params: Mapping[str, str],
    run_name: str | None,
    plan: LaunchPlan | None,
    parent_run_id: str | None,
    tags: Mapping[str, object] | None,
    tracking_uri: str | None,
    experiment: str | None,
    notebook_path: str | os.PathLike[str] | None,
    start_time: float | None = None,
) -> TrackedRun:
    from mlflow.entities import Param

    setup = setup_mlflow(tracking_uri, experiment, config=config)
    client = get_client(setup.tracking_uri)
    env = {**os.environ, **(plan.env if plan is not None else {})}
    scrubber = Scrubber.from_sources(
        config.to_dict() if config is not None else None, env, argv=plan.argv if plan is not None else ()
    )
    notebook = str(notebook_path) if notebook_path else None
    all_tags = build_training_tags(config=config, plan=plan, extra=tags, notebook_path=notebook, scrubber=scrubber)
    all_tags["nbexec.status"] = RunStatus.RUNNING.value
    all_tags.update(launcher_tags())  # so a run this process cannot end is found later (abandoned.py)
    experiment_id = setup.experiment_id
    run_name = run_name or (plan.run_name if plan is not None else None)
    try:
        if parent_run_id:
            experiment_id = client.get_run(parent_run_id).info.experiment_id
            all_tags[TAG_PARENT_RUN] = parent_run_id
        run = client.create_run(experiment_id, start_time=int((start_time or time.time()) * 1000), tags=all_tags, run_name=run_name)
    except Exception as err:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
        raise TrackingError(
            f"could not create an MLflow run in {setup.tracking_uri} (experiment {setup.experiment_name!r}"
            f"{', parent run ' + parent_run_id if parent_run_id else ''}): {one_line(err)}; nothing was started"
        ) from err
    tracked = TrackedRun(
        setup=setup, run_id=run.info.run_id, experiment_id=str(experiment_id), run_name=run_name,
        config=config, plan=plan, scrubber=scrubber,
    )
    try:
        log_batch_chunked(client, tracked.run_id, params=[Param(k, v) for k, v in params.items()])
    except Exception as err:  # noqa: BLE001
        tracked.end(RunStatus.FAILED, failure=f"params could not be logged: {one_line(err)}")
        raise TrackingError(
            f"MLflow run {tracked.run_id} in {setup.tracking_uri}: params could not be logged: {one_line(err)}"
        ) from err
    return tracked
