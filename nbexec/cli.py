"""Command line: ``nbexec train`` and ``nbexec doctor`` over the same core as the notebook.

    nbexec train [CONFIG] [--nproc N] [--set k=v ...] [--output DIR] [--dry-run] [-- script args]
    nbexec doctor [CONFIG]
    nbexec hpo [CONFIG] --space SPACE --trials N [--study PATH] [--final]
    nbexec lineage RUN_DIR [--study PATH]
    nbexec backup RUN_DIR --to drive|PATH      nbexec restore LOCATION

Exit codes: 0 success, 1 training failed, 2 bad config or usage,
3 environment or tracking store not ready, 4 backup failed (a training that
finished stays finished: its checkpoint is in the run dir), 130 interrupted
(the job is cancelled first).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nbexec.errors import (
    BackupError,
    ConfigError,
    EnvironmentCheckError,
    TrackingError,
    TrainingCancelled,
    TrainingFailed,
)
from nbexec.options import add_train_arguments, prepare_from_args, split_script_args

if TYPE_CHECKING:
    from nbexec.result import TrainingResult

EXIT_FAILED, EXIT_USAGE, EXIT_ENV, EXIT_BACKUP, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbexec", description="Run PyTorch DDP training jobs with torchrun, logs and results."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="run a training job",
        description="Run a training job. Arguments after `--` go to the training script untouched.",
    )
    add_train_arguments(train)

    from nbexec.hpo.cli import add_hpo_arguments, add_lineage_arguments

    add_hpo_arguments(sub.add_parser("hpo", help="run or resume an Optuna sweep of training jobs (nbexec[hpo])"))
    add_lineage_arguments(sub.add_parser("lineage", help="show where a trained model came from"))

    doctor = sub.add_parser("doctor", help="show hardware and check the environment for a launch")
    doctor.add_argument("config", nargs="?", help="config to check (default: embedded demo config)")
    doctor.add_argument("--nproc", help="processes to check for")

    from nbexec.backup.cli import add_backup_commands

    add_backup_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list, script_args = split_script_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    _quiet_backup_warnings()
    try:
        if args.command == "train":
            return _train(args, script_args)
        if args.command in ("hpo", "lineage"):
            from nbexec.hpo import cli as hpo_cli

            return hpo_cli.hpo_command(args) if args.command == "hpo" else hpo_cli.lineage_command(args)
        if args.command in ("backup", "restore"):
            from nbexec.backup.cli import run_backup_command

            return run_backup_command(args)
        return _doctor(args)
    except ConfigError as err:
        print(f"nbexec: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (EnvironmentCheckError, TrackingError) as err:
        print(f"nbexec: {err}", file=sys.stderr)
        return EXIT_ENV
    except TrainingFailed as err:  # nbexec hpo --final
        print(f"nbexec: FAILED\n{err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # nbexec hpo: the trial's job is already cancelled; run again to resume
        print("\nnbexec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackupError as err:  # the backup target is unusable: nothing was started
        print(f"nbexec: backup: {err}", file=sys.stderr)
        return EXIT_ENV


def _quiet_backup_warnings() -> None:
    """The summary's ``backup:`` line says a failed backup cleanly; Python's raw warning would repeat it."""
    import warnings

    from nbexec.backup.record import BackupWarning

    warnings.filterwarnings("ignore", message=r"training .* FINISHED, but its backup", category=BackupWarning)


def _train(args: argparse.Namespace, script_args: list[str] | None) -> int:
    from nbexec.executor import launch
    from nbexec.runner.sinks import TerminalSink

    plan = prepare_from_args(args, script_args)
    if args.dry_run:
        from nbexec.schedulers import dry_run

        print(dry_run(plan))  # the plan, plus other nodes' commands / sbatch script / job YAML
        return 0
    print(f"nbexec: starting {plan.run_name}: {plan.nproc} x {plan.backend}, logs in {plan.log_dir}", flush=True)
    launch_cfg = plan.config.launch
    if launch_cfg.is_multinode and launch_cfg.scheduler == "local":
        from nbexec.schedulers.multinode import describe_peers

        print(describe_peers(plan), flush=True)  # what every other node must run
    sinks = [] if args.quiet else [TerminalSink(ranks=args.ranks)]
    run = launch(plan=plan, sinks=sinks)
    if getattr(run, "job_id", None):
        print(f"nbexec: submitted {launch_cfg.scheduler} job {run.job_id}", flush=True)
    try:
        result = run.result()
    except KeyboardInterrupt:
        print("\nnbexec: interrupted; stopping the job...", file=sys.stderr, flush=True)
        run.cancel()
        print(f"nbexec: {run.name} KILLED; logs in {plan.log_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingCancelled as err:
        print(f"nbexec: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingFailed as err:
        streamed = not args.quiet and (args.ranks is None or err.rank in args.ranks)
        print(failure_report(err, run.outcome, traceback_shown=streamed), file=sys.stderr)
        return EXIT_FAILED
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()) or "none reported"
    print(
        f"nbexec: {result.run_name} {result.status.value} in {result.duration_s:.1f} s\n"
        f"  metrics:    {metrics}\n"
        f"  checkpoint: {result.checkpoint or 'none'}\n"
        f"  run dir:    {result.run_dir}"
    )
    setup = run.tracking.setup if result.mlflow_run_id and run.tracking is not None else None
    if setup is not None:
        print(f"  mlflow:     {result.mlflow_run_id} (experiment {setup.experiment_name}, id {setup.experiment_id})\n"
              f"  open:       {setup.run_url(result.mlflow_run_id) or setup.ui_hint}")
    if result.backup is not None:
        from nbexec.notebook.summary import backup_line

        text, ok = backup_line(result.backup) or ("", True)
        print(f"  backup:     {text}", file=sys.stdout if ok else sys.stderr)
        if not ok:
            return EXIT_BACKUP
    return 0


def failure_report(err: TrainingFailed, result: TrainingResult | None, *, traceback_shown: bool) -> str:
    """The end of a failed run in a terminal: the root cause once, where it is, where the logs are.

    The failing rank's traceback was streamed already when its lines were
    shown (``traceback_shown``); it is repeated only when it was not.
    torchrun's own report of the failure is in ``launcher.log``.
    """
    rc = err.root_cause
    took = f" in {result.duration_s:.1f} s" if result is not None else ""
    lines = [f"nbexec: {err.run_name} FAILED{took}", f"  root cause: {rc.headline()}"]
    if rc.where:
        lines.append(f"  at:         {rc.where}")
    if rc.traceback and not traceback_shown:
        lines += ["  " + ln for ln in rc.traceback.rstrip().splitlines()]
    elif not rc.traceback and err.log_tail and not traceback_shown:
        lines.append("  last lines of its log:")
        lines += ["    " + ln for ln in err.log_tail]
    if err.log_paths:
        folder = next(iter(err.log_paths.values())).parent
        names = ", ".join(p.name for p in err.log_paths.values())
        lines.append(f"  logs:       {folder} ({names}; torchrun's own report in launcher.log)")
    return "\n".join(lines)


def _doctor(args: argparse.Namespace) -> int:
    from nbexec.checks import check_environment
    from nbexec.config import load_config
    from nbexec.plan import plan_training

    overrides = [f"launch.nproc={args.nproc}"] if args.nproc else []
    plan = plan_training(load_config(args.config, overrides=overrides))
    hw = plan.hardware
    print(f"hardware:  {hw.summary()}")
    print(f"gpu probe: {hw.gpu_source}" + (f" ({hw.gpu_error})" if hw.gpu_error else ""))
    print(f"plan:      {plan.nproc} process(es), backend {plan.backend}")
    checks = check_environment(plan)
    for check in checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_ENV


def run() -> None:
    """The ``nbexec`` program: :func:`main`, then exit with its code.

    Before exiting, the heap is frozen (``gc.freeze()``): with MLflow's import
    graph loaded, the interpreter's final garbage collections took ~0.5 s of
    every ``nbexec train`` (about a quarter of a no-op 2-rank job). The job is
    over and every file is closed by then; objects are still finalized as the
    modules are torn down. Only here, not in :func:`main`, which tests and
    other programs call in-process.
    """
    import gc

    code = main()
    gc.freeze()
    raise SystemExit(code)


if __name__ == "__main__":
    run()
