"""The one run path: config -> plan -> checks -> run dir -> launched job -> result.

The magics, the panel, the CLI and the seed's functions all come through
:func:`launch`; :func:`execute_training_subprocess` is its blocking form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.checks import verify_training_environment
from nbexec.config import TrainingConfig, load_config
from nbexec.errors import EnvironmentCheckError
from nbexec.hardware import HardwareInfo
from nbexec.plan import LaunchPlan, plan_training
from nbexec.result import TrainingResult
from nbexec.runner.handle import Finalizer, NamedFinalizer, TrainingRun
from nbexec.runner.sinks import Sink, TerminalSink, prints_its_own_metrics
from nbexec.schedulers import check_options, get_scheduler
from nbexec.trainer_spec import trainer_spec

ConfigSource = str | Path | Mapping[str, Any] | TrainingConfig | None


def prepare(
    config: ConfigSource = None,
    *,
    overrides: Iterable[str] = (),
    output_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    nproc: int | str | None = None,
    run_name: str | None = None,
    entrypoint: str | Path | None = None,
    module: str | None = None,
    script_args: Sequence[str] | None = None,
    resume_from: str | Path | None = None,
    hardware: HardwareInfo | None = None,
    base_env: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """Resolve and check a launch without starting it (what ``--dry-run`` shows).

    Keyword arguments override the config (they are applied as overrides, so
    they are validated like the config itself).

    Raises:
        ConfigError: the config or an argument is invalid.
        EnvironmentCheckError: the machine cannot run it (all problems listed).
    """
    extra = list(overrides)
    if output_dir is not None:
        extra.append(f"output.dir={_yaml_str(output_dir)}")
    if data_path is not None:
        extra.append(f"data.path={_yaml_str(data_path)}")
    if nproc is not None:
        extra.append(f"launch.nproc={nproc}")
    if run_name is not None:
        extra.append(f"output.run_name={_yaml_str(run_name)}")
    # The target goes in with the first validation: the built-in trainer's fields
    # are checked only when it is the one that runs (quoted, a path reads back exactly).
    if entrypoint is not None:
        extra += [f"launch.entrypoint={_yaml_str(entrypoint)}", "launch.module=null"]
    if module is not None:
        extra += [f"launch.module={_yaml_str(module)}", "launch.entrypoint=null"]
    cfg = load_config(config, overrides=extra)
    # Script args are set on the dict, not as text overrides: each is kept as given.
    if script_args is not None:
        raw = cfg.to_dict()
        raw["launch"]["args"] = list(script_args)
        cfg = load_config(raw)
    check_options(cfg)  # launch.slurm / launch.azureml: the config keeps them as given, schedulers check them
    scheduler = get_scheduler(cfg)
    if hardware is None:
        hardware = scheduler.hardware(cfg)  # the node a cluster gives; None: this machine
    plan = plan_training(cfg, hardware=hardware, base_env=base_env, resume_from=resume_from,
                         rendezvous=scheduler.rendezvous_args)
    problems = []
    if plan.resume_from is not None and not plan.resume_from.is_dir():
        state = "is not a directory" if plan.resume_from.exists() else "does not exist"
        problems.append(
            f"resume checkpoint {plan.resume_from} {state}; give the checkpoint directory of an earlier run"
        )
    elif plan.resume_from is not None:
        spec = trainer_spec(cfg.launch.target_module)
        problem = spec.resume_problem(plan.resume_from) if spec and spec.resume_problem else None
        if problem is not None:  # a damaged state file, a run dir given for its checkpoint...
            problems.append(problem)
    try:
        verify_training_environment(plan)
    except EnvironmentCheckError as err:
        problems = err.problems + problems
    if problems:
        raise EnvironmentCheckError(problems)
    return plan


@dataclass(frozen=True)
class TrackingOptions:
    """How a job's MLflow run is opened, for callers that need more than the config says (HPO trials).

    Attributes:
        parent_run_id: nest the job's run under this one (it goes in the parent's experiment).
        run_name: the MLflow run's name (default: the run dir's).
        params: more params (nested dicts flattened, secrets redacted).
        tags: more tags.
        open_first: open the run before anything is spawned (its id is known at once:
            ``run.tracking.run_id``), as ``tracking.required`` does.
    """

    parent_run_id: str | None = None
    run_name: str | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, object] | None = None
    open_first: bool = False


def launch(
    config: ConfigSource = None,
    *,
    sinks: Sequence[Sink] = (),
    finalizers: Sequence[Finalizer] = (),
    plan: LaunchPlan | None = None,
    tracking: TrackingOptions | None = None,
    **options: Any,
) -> TrainingRun:
    """Start a training job and return its handle at once.

    The one path every face takes (the magics, the panel, the CLI, the seed's
    functions, HPO trials), for every scheduler (:mod:`nbexec.schedulers`):
    plan, the scheduler's own checks, the MLflow run and the backup attached,
    then the run handle started with the scheduler's launcher.

    Args:
        config: path, YAML/JSON text, dict or TrainingConfig (None: defaults).
        sinks: where to show lines and events while it runs (e.g. TerminalSink).
        finalizers: called with the result when the job ends (after tracking, before backup).
        plan: an already prepared plan (from :func:`prepare`); skips preparing.
        tracking: how the MLflow run is opened, beyond the config (HPO trials nest theirs).
        **options: as for :func:`prepare` (overrides, output_dir, nproc, ...).

    Unless ``tracking.enabled`` is false, the job gets an MLflow run (the
    embedded SQLite store ``./mlflow.db`` by default), closed with the job's
    outcome; ``run.tracking`` holds it. The store is checked before anything
    is spawned; the run itself is opened while torchrun starts, and every
    rank gets its id (``MLFLOW_RUN_ID``) before the script runs, so the
    script's own MLflow logging lands in it too.

    Returns:
        The :class:`TrainingRun` handle (status RUNNING).

    Raises:
        ConfigError, EnvironmentCheckError, TrackingError, BackupError: before anything is spawned.
    """
    from nbexec.schedulers.api import TrackingMode

    plan = plan or prepare(config, **options)
    scheduler = get_scheduler(plan.config)
    problems = scheduler.check(plan)  # its tools, credentials: nothing is submitted without them
    if problems:
        raise EnvironmentCheckError(problems)
    launch_cfg = plan.config.launch
    tracked: Any = None
    backup: Any = None
    # node 0 backs up (it holds the checkpoint and the MLflow run); target checked before anything starts
    if plan.config.backup.enabled and launch_cfg.node_rank == 0 and scheduler.tracking is not TrackingMode.OWN:
        from nbexec.backup import run_backup_finalizer

        backup = run_backup_finalizer(plan)
    # Multi-node: node 0's launcher owns the MLflow run; the other nodes open none.
    if plan.config.tracking.enabled and launch_cfg.node_rank == 0 and scheduler.tracking is not TrackingMode.OWN:
        from nbexec.tracking.deferred import DeferredTrackedRun

        # The store is checked now (TrackingError: nothing spawned). The run is opened while the
        # job starts and the ranks wait for its id only before the script runs (nbexec.tracking.
        # deferred), unless the scheduler's job may outlive this process: then it is opened first.
        options_ = tracking or TrackingOptions()
        tracked = DeferredTrackedRun(
            plan, open_first=options_.open_first or scheduler.tracking is TrackingMode.BEFORE,
            parent_run_id=options_.parent_run_id, run_name=options_.run_name, params=options_.params,
            tags=options_.tags,
        )
        plan = tracked.plan
        # The ranks' CPU/GPU/memory go in as MLflow system metrics from here; the trainer's metrics
        # too, unless rank 0 logs them itself (tracking.metrics_from: rank0).
        sinks = [*sinks, tracked.metrics_sink(trainer_metrics=plan.config.tracking.metrics_from == "parent")]
        if launch_cfg.stall_timeout > 0:  # a stall tags the run and logs its stacks when it happens
            sinks = [*sinks, tracked.stall_sink()]
        finalizers = [NamedFinalizer("ending the MLflow run, logging its artifacts", tracked.finalize),
                      *finalizers]  # first: later ones see the run id
    if backup is not None:  # last: it sees the MLflow run id and backs up the ended run's store
        backup.tracking = tracked
        finalizers = [*finalizers, NamedFinalizer("backing up the checkpoint", backup.finalize)]
    run = TrainingRun(plan, sinks=sinks, finalizers=finalizers, launcher=scheduler.launcher(plan))
    try:
        run.start(after_inputs=tracked.start_opening if tracked is not None else None)
    except BaseException as err:
        if tracked is not None:
            tracked.abort(err)
        raise
    run.tracking = tracked
    return run


def execute_training_subprocess(
    config: ConfigSource = None,
    output_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    *,
    stream: bool = True,
    timeout: float | None = None,
    **options: Any,
) -> TrainingResult:
    """Run a training job to the end (the seed's blocking API).

    Args:
        config: as for :func:`launch`.
        output_dir: where run directories go (``<output_dir>/<run_name>``).
        data_path: the dataset directory given to the trainer (``data.path``).
        stream: print rank-prefixed lines to stdout while it runs.
        timeout: cancel the job and raise TimeoutError after this many seconds.
        **options: as for :func:`prepare`.

    Returns:
        The :class:`TrainingResult` of a successful run.

    Raises:
        TrainingFailed: a rank failed (rank, exit code, exception, traceback, logs).
        TrainingCancelled: interrupted (Ctrl-C / kernel interrupt cancels the job).
    """
    launch_only = {key: options.pop(key) for key in ("tracking", "finalizers", "sinks") if key in options}
    plan = prepare(config, output_dir=output_dir, data_path=data_path, **options)
    sinks = list(launch_only.pop("sinks", ()))
    if stream:  # the built-in trainer prints its own line per step: nbexec's would repeat it
        sinks.append(TerminalSink(metric_lines=not prints_its_own_metrics(plan.config)))
    run = launch(plan=plan, sinks=sinks, **launch_only)
    try:
        run.wait(timeout)
    except BaseException:  # KeyboardInterrupt, TimeoutError: leave nothing running
        run.cancel()
        raise
    return run.result()


def _yaml_str(value: object) -> str:
    """Quote a path/name for an override so YAML reads it back as the same string."""
    from nbexec.config import quote_value

    return quote_value(str(value))
