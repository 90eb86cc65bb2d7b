"""The one run path: config -> plan -> checks -> run dir -> launched job -> result.

The magics, the panel, the CLI and the seed's functions all come through
:func:`launch`; :func:`execute_training_subprocess` is its blocking form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nbexec.checks import verify_training_environment
from nbexec.config import BUILTIN_TRAINER_MODULE, TrainingConfig, load_config
from nbexec.errors import EnvironmentCheckError
from nbexec.hardware import HardwareInfo
from nbexec.plan import LaunchPlan, plan_training
from nbexec.result import TrainingResult
from nbexec.runner.handle import Finalizer, TrainingRun, write_run_inputs
from nbexec.runner.sinks import Sink, TerminalSink

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
    if hardware is None and cfg.launch.scheduler != "local":
        from nbexec.schedulers import scheduler_hardware

        hardware = scheduler_hardware(cfg)  # the node the scheduler gives, not this machine
    plan = plan_training(cfg, hardware=hardware, base_env=base_env, resume_from=resume_from)
    problems = []
    if plan.resume_from is not None and not plan.resume_from.is_dir():
        state = "is not a directory" if plan.resume_from.exists() else "does not exist"
        problems.append(
            f"resume checkpoint {plan.resume_from} {state}; give the checkpoint directory of an earlier run"
        )
    elif plan.resume_from is not None and cfg.launch.target_module == BUILTIN_TRAINER_MODULE:
        from nbexec.trainers.token_classification.state import resume_problem

        problem = resume_problem(plan.resume_from)  # a damaged state file, a run dir for its checkpoint...
        if problem is not None:
            problems.append(problem)
    try:
        verify_training_environment(plan)
    except EnvironmentCheckError as err:
        problems = err.problems + problems
    if problems:
        raise EnvironmentCheckError(problems)
    return plan


def launch(
    config: ConfigSource = None,
    *,
    sinks: Sequence[Sink] = (),
    finalizers: Sequence[Finalizer] = (),
    plan: LaunchPlan | None = None,
    **options: Any,
) -> TrainingRun:
    """Start a training job and return its handle at once.

    Args:
        config: path, YAML/JSON text, dict or TrainingConfig (None: defaults).
        sinks: where to show lines and events while it runs (e.g. TerminalSink).
        finalizers: called with the result when the job ends (tracking, backup).
        plan: an already prepared plan (from :func:`prepare`); skips preparing.
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
    plan = plan or prepare(config, **options)
    if plan.config.launch.scheduler != "local":  # slurm, azureml: nbexec.schedulers
        from nbexec.schedulers import submit

        return submit(plan, sinks=sinks, finalizers=finalizers)
    tracked: Any = None
    backup: Any = None
    # node 0 backs up (it holds the checkpoint and the MLflow run); target checked before anything starts
    if plan.config.backup.enabled and plan.config.launch.node_rank == 0:
        from nbexec.backup import run_backup_finalizer

        backup = run_backup_finalizer(plan)
    # Multi-node: node 0's launcher owns the MLflow run; the other nodes open none.
    if plan.config.tracking.enabled and plan.config.launch.node_rank == 0:
        from nbexec.tracking.deferred import DeferredTrackedRun

        # The store is checked now (TrackingError: nothing spawned); the run is
        # opened while torchrun starts, and the ranks wait for its id only
        # before the script runs (see nbexec.tracking.deferred).
        tracked = DeferredTrackedRun(plan)
        plan = tracked.plan
        if plan.config.tracking.metrics_from == "parent":  # else rank 0 logs them itself
            sinks = [*sinks, tracked.metrics_sink()]
        finalizers = [tracked.finalize, *finalizers]  # first: later ones see the run id
    if backup is not None:  # last: it sees the MLflow run id and backs up the ended run's store
        backup.tracking = tracked
        finalizers = [*finalizers, backup.finalize]
    run_class: type[TrainingRun] = TrainingRun
    if plan.config.launch.is_multinode:  # root cause: the earliest failure on any node
        from nbexec.schedulers.multinode_run import MultiNodeRun

        run_class = MultiNodeRun
    return start_run(
        plan, lambda: run_class(plan, sinks=sinks, finalizers=finalizers), tracked,
        after_inputs=tracked.start_opening if tracked is not None else None,
    )


def start_run(
    plan: LaunchPlan,
    make_run: Callable[[], TrainingRun],
    tracked: Any = None,
    *,
    after_inputs: Callable[[], None] | None = None,
) -> TrainingRun:
    """Write the run's inputs (config, command), then make the handle and start it.

    Used by every scheduler that runs processes through a :class:`TrainingRun`
    (local, multi-node, Slurm). The handle is made only once the run dir is
    written (it starts its sink thread); ``after_inputs`` runs just before
    (the local launch starts opening its MLflow run there). When the run
    cannot start, the MLflow run (if any) is aborted and the error raised;
    ``run.tracking = tracked``.
    """
    try:
        write_run_inputs(plan)
        if after_inputs is not None:
            after_inputs()
        run = make_run()
        run._start()
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
    sinks = [TerminalSink()] if stream else []
    run = launch(config, output_dir=output_dir, data_path=data_path, sinks=sinks, **options)
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
