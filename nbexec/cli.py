"""Command line: ``nbexec train`` and ``nbexec doctor`` over the same core as the notebook.

    nbexec train [CONFIG] [--nproc N] [--set k=v ...] [--output DIR] [--dry-run] [-- script args]
    nbexec doctor [CONFIG]
    nbexec hpo [CONFIG] --space SPACE --trials N [--study PATH] [--final]
    nbexec lineage RUN_DIR [--study PATH]
    nbexec stacks RUN_DIR [--rank R] [--native]
    nbexec backup RUN_DIR --to drive|PATH      nbexec restore LOCATION
    nbexec ui [--store URI] [--port N] [--stop]

Exit codes: 0 success, 1 training failed, 2 bad config or usage,
3 environment or tracking store not ready, 4 backup failed (a training that
finished stays finished: its checkpoint is in the run dir), 130 interrupted,
143 SIGTERM, 129 SIGHUP (128 + the signal; the job is cancelled first and its
outcome written: ``result.json`` and the MLflow run end KILLED).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nbexec.errors import (
    BackupError,
    ConfigError,
    EnvironmentCheckError,
    NbexecError,
    TrackingError,
    TrainingCancelled,
    TrainingFailed,
)
from nbexec.options import add_train_arguments, prepare_from_args, split_script_args
from nbexec.render.summary import (
    RunSummary,
    backup_line,
    failure_text_lines,
    logs_text_line,
    render_summary_text,
    summary_text_lines,
)
from nbexec.runner.sinks import Sink, StartedLine

if TYPE_CHECKING:
    from types import FrameType

    from nbexec.events import Event
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun

EXIT_FAILED, EXIT_USAGE, EXIT_ENV, EXIT_BACKUP, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the ``nbexec`` program: handled as Ctrl-C is, exit code 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def exit_code_of(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal for SIGTERM (143) and SIGHUP (129)."""
    return 128 + stop.signum if isinstance(stop, Stopped) else EXIT_INTERRUPTED


class StopSignals:
    """What SIGINT, SIGTERM and SIGHUP do to the ``nbexec`` program.

    :func:`run` installs it (a program may; the library installs no signal
    handlers). Any of the three raises in the main thread, SIGINT as
    ``KeyboardInterrupt``, the others as :class:`Stopped`, so a job is
    cancelled and its outcome written whichever ended the program. Around a
    job it does more:

    - while the job is being started (:meth:`starting`), the first signal
      waits until the run handle exists (:meth:`raise_held`), so the job
      that was started is the one cancelled; a second one gives up the start;
    - once the job runs (:meth:`watching`), only the first signal raises.
      Later ones, while the job is being stopped, call ``hurry`` once (cancel
      without the grace period) and return: raising there would abandon
      ``result.json`` and the MLflow run half way.
    """

    def __init__(self) -> None:
        self._holding = False
        self._held: int | None = None
        self._watching = False
        self._raised = False
        self._hurry: Callable[[], None] | None = None

    def install(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    @contextmanager
    def starting(self) -> Iterator[None]:
        """The job is being started: the first signal is held until :meth:`raise_held`.

        Still held after the block, so none is lost before the caller's ``try``;
        the block raising (nothing started) ends the holding.
        """
        self._holding, self._held = True, None
        try:
            yield
        except BaseException:
            self._holding = False
            raise

    def watching(self, hurry: Callable[[], None]) -> None:
        """The job runs: the first signal raises, later ones call ``hurry`` (once)."""
        self._watching, self._raised, self._hurry = True, False, hurry

    def raise_held(self) -> None:
        """Stop holding; raise the signal that came while the job was starting, if one did."""
        self._holding = False
        held, self._held = self._held, None
        if held is not None:
            self._raised = True
            raise _interrupt(held)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes: no printing here (the main
        # thread may be inside a print to the same stream), no blocking.
        if self._holding and self._held is None:
            self._held = signum
            return
        if self._watching and (self._raised or self._held is not None):
            hurry, self._hurry = self._hurry, None
            if hurry is not None:
                hurry()
            return
        self._raised = True
        raise _interrupt(signum)


TRAIN_EXAMPLES = """\
examples:
  nbexec train                                   the built-in trainer on synthetic data (CPU: 2 x gloo)
  nbexec train config.yaml --nproc 4             your config, 4 processes on this machine
  nbexec train --set training.epochs=1 --set training.learning_rate=3e-5
  nbexec train --dry-run config.yaml             show the command, environment and run dir; run nothing
  nbexec train --entrypoint train.py -- --lr 3e-5    your script; arguments after -- go to it untouched
  nbexec train -m my_pkg.train --no-tracking     a module, like python -m, without an MLflow run
  nbexec train --experiment ner --backup /mnt/backups    an MLflow experiment; back the checkpoint up
  nbexec train --resume outputs/<run>/checkpoint --set training.epochs=4

The run's folder is outputs/<run name>/: config.yaml (what ran), command.txt, logs/, events.jsonl,
result.json and the checkpoint. MLflow: ./mlflow.db unless MLFLOW_TRACKING_URI or tracking.uri says.
"""


def version_line() -> str:
    """``nbexec --version``: nbexec's version and what it runs on (read without importing torch)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from nbexec.version import __version__

    parts = [f"python {platform.python_version()}"]
    for dist in ("torch", "mlflow-skinny", "mlflow"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return f"nbexec {__version__} ({', '.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbexec", description="Run PyTorch DDP training jobs with torchrun, logs and results."
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="run a training job",
        description="Run a training job. Arguments after `--` go to the training script untouched.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(train)

    from nbexec.commands.hpo import add_hpo_arguments
    from nbexec.commands.lineage import add_lineage_arguments
    from nbexec.commands.stacks import add_stacks_arguments
    from nbexec.commands.ui import add_ui_arguments

    add_hpo_arguments(sub.add_parser("hpo", help="run or resume an Optuna sweep of training jobs (nbexec[hpo])"))
    add_lineage_arguments(sub.add_parser("lineage", help="show where a trained model came from"))
    add_ui_arguments(sub.add_parser(
        "ui", help="serve an MLflow UI for the tracking store on 127.0.0.1 (Ctrl-C stops it)",
        description="Serve an MLflow UI for the tracking store on 127.0.0.1, or show the one already running.",
    ))
    add_stacks_arguments(sub.add_parser(
        "stacks", help="show where every rank of a running job is (its threads' stacks), without stopping it"))

    doctor = sub.add_parser("doctor", help="show hardware and check the environment for a launch")
    doctor.add_argument("config", nargs="?", help="config to check (default: embedded demo config)")
    doctor.add_argument("--nproc", help="processes to check for")

    from nbexec.backup.cli import add_backup_commands

    add_backup_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, signals: StopSignals | None = None) -> int:
    """Run one command; returns its exit code.

    Args:
        signals: the program's signal handling (:func:`run` installs it); without it,
            Ctrl-C still cancels the job (``KeyboardInterrupt``).
    """
    args_list, script_args = split_script_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    _quiet_backup_warnings()
    try:
        if args.command == "train":
            return _train(args, script_args, signals or StopSignals())
        if args.command == "stacks":
            from nbexec.commands.stacks import stacks_command

            return stacks_command(args)
        if args.command in ("hpo", "lineage"):
            from nbexec.commands import hpo, lineage

            return hpo.hpo_command(args) if args.command == "hpo" else lineage.lineage_command(args)
        if args.command == "ui":
            from nbexec.commands.ui import ui_command

            return ui_command(args)
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
    except KeyboardInterrupt as stop:  # nbexec hpo: the trial's job is already cancelled; run again to resume
        _say(f"\nnbexec: {_what_stopped(stop)}")
        return exit_code_of(stop)
    except BackupError as err:  # the backup target is unusable: nothing was started
        print(f"nbexec: backup: {err}", file=sys.stderr)
        return EXIT_ENV


def _quiet_backup_warnings() -> None:
    """The summary's ``backup:`` line says a failed backup cleanly; Python's raw warning would repeat it."""
    import warnings

    from nbexec.backup.record import BackupWarning

    warnings.filterwarnings("ignore", message=r"training .* FINISHED, but its backup", category=BackupWarning)


def _train(args: argparse.Namespace, script_args: list[str] | None, signals: StopSignals) -> int:
    from nbexec.executor import launch
    from nbexec.runner.sinks import TerminalSink, prints_its_own_metrics

    plan = prepare_from_args(args, script_args)
    if args.dry_run:
        from nbexec.schedulers import get_scheduler

        dry = get_scheduler(plan.config).dry_run(plan)
        dry.write()  # e.g. AzureML's job YAML, for `az ml job create -f` (its path is in the text)
        print(dry)  # the plan, plus other nodes' commands / sbatch script / job YAML
        return 0
    launch_cfg = plan.config.launch
    # The starting line comes once the job's processes are up, before any of their
    # lines: an error that stops the launch (nothing started) comes without it.
    sinks: list[Sink] = [_StartingLine(plan, say_stalls=args.quiet)]
    if not args.quiet:
        metric_lines = args.metric_lines
        if metric_lines is None:
            metric_lines = not prints_its_own_metrics(plan.config)
        sinks.append(TerminalSink(ranks=args.ranks, metric_lines=metric_lines))
    with signals.starting():
        run = launch(plan=plan, sinks=sinks)
        hurry = _Hurry(run)
        signals.watching(hurry=hurry)
    try:
        signals.raise_held()
        if getattr(run, "job_id", None):
            print(f"nbexec: submitted {launch_cfg.scheduler} job {run.job_id}", flush=True)
        result = run.result()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP (Stopped)
        return _stop(run, stop)
    except TrainingCancelled as err:
        print(f"nbexec: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingFailed as err:
        streamed = not args.quiet and (args.ranks is None or err.rank in args.ranks)
        print(failure_report(err, run.outcome, traceback_shown=streamed, tracking=run.tracking), file=sys.stderr)
        return failed_exit_code(err)
    finally:
        hurry.close()
    return print_summary(result, run.tracking)


def failed_exit_code(err: TrainingFailed) -> int:
    """``nbexec train``'s exit code for a failed run: 2 (a bad config) when a rank stopped on a ConfigError.

    The built-in trainer raises one for a problem of its data or model found
    in the ranks (a dataset it cannot read, a backbone it cannot load): the
    exit code of the same problem found before the launch.
    """
    return EXIT_USAGE if err.root_cause.exc_type == "nbexec.errors.ConfigError" else EXIT_FAILED


def print_summary(result: TrainingResult, tracking: object = None) -> int:
    """Print a finished run's summary (the text renderer's); returns the exit code.

    Its problems (NOT tracked and why, a failed backup) go to stderr, said once
    there; the rest to stdout. The lineage row is left to ``nbexec lineage``.

    Returns:
        ``EXIT_BACKUP`` when the backup failed (the training stays FINISHED), else 0.
    """
    summary = RunSummary.from_result(result, tracking=tracking)
    for text, problem in summary_text_lines(summary, lineage=False):
        print(text, file=sys.stderr if problem else sys.stdout, flush=True)  # flushed: in order when merged
    backup = backup_line(result.backup)
    return EXIT_BACKUP if backup is not None and not backup[1] else 0


class _StartingLine(StartedLine):
    """The starting line, then (multi-node) what every other node must run; with ``--quiet``, stalls.

    Without ``--quiet`` a stall is one of the lines the terminal shows already.
    """

    def __init__(self, plan: LaunchPlan, *, say_stalls: bool = False) -> None:
        super().__init__(plan)
        self.say_stalls = say_stalls

    def on_events(self, events: Sequence[Event]) -> None:
        if not self.say_stalls:
            return
        for ev in events:
            if ev.get("kind") == "stall":
                print(f"nbexec: stall: {ev.get('message')}" + (f"; stacks in {ev['stacks']}" if ev.get("stacks") else ""),
                      file=sys.stderr, flush=True)

    def on_start(self, run: object) -> None:
        super().on_start(run)
        plan = self.plan
        launch_cfg = plan.config.launch
        if launch_cfg.is_multinode and launch_cfg.scheduler == "local":
            from nbexec.schedulers.multinode import describe_peers

            print(describe_peers(plan), flush=True)  # what every other node must run


class _Hurry:
    """Called from the signal handler: cancel the run without its grace period, on a thread of its own.

    The thread waits from the start, so the handler only sets an event: it
    must neither block nor print. :meth:`close` ends the thread unused.
    """

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self._asked = threading.Event()
        self._closed = False
        threading.Thread(target=self._wait, name="nbexec-hurry", daemon=True).start()

    def __call__(self) -> None:
        self._asked.set()

    def close(self) -> None:
        self._closed = True
        self._asked.set()

    def _wait(self) -> None:
        self._asked.wait()
        if self._closed or self.run.done():
            return
        _say("nbexec: stopping now, without the grace period")
        try:
            self.run.cancel(grace=0.0)
        except NbexecError:
            pass  # the main thread's cancel() says what is left


def _stop(run: TrainingRun, stop: KeyboardInterrupt) -> int:
    """Cancel the job after a signal and say how it ended (result.json and the MLflow run are written then)."""
    newline = "" if isinstance(stop, Stopped) else "\n"  # after the terminal's ^C
    _say(f"{newline}nbexec: {_what_stopped(stop)}; stopping the job...")
    try:
        run.cancel()
    except NbexecError as err:
        _say(f"nbexec: {err}")
        return exit_code_of(stop)
    outcome = run.outcome
    if outcome is None:
        _say(f"nbexec: {run.name} stopped, but its result is not written yet; logs in {run.plan.log_dir}")
    else:
        _say(f"nbexec: {run.name} {outcome.status.value}; logs in {run.plan.log_dir}")
    return exit_code_of(stop)


def _what_stopped(stop: KeyboardInterrupt) -> str:
    return f"got {signal.Signals(stop.signum).name}" if isinstance(stop, Stopped) else "interrupted"


def _say(text: str) -> None:
    """A line on stderr that may fail (SIGHUP: the terminal is gone) without stopping what follows."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def failure_report(
    err: TrainingFailed, result: TrainingResult | None, *, traceback_shown: bool, tracking: object = None
) -> str:
    """The end of a failed run in a terminal: its summary, then the root cause once, where it is, the logs.

    The failing rank's traceback was streamed already when its lines were
    shown (``traceback_shown``); it is repeated only when it was not (without
    one, the last lines of the rank's log). torchrun's own report of the
    failure is in ``launcher.log``.
    """
    show = not traceback_shown
    if result is None:  # no result to summarize: what the error itself knows
        lines = [f"nbexec: {err.run_name} FAILED",
                 *failure_text_lines(err.root_cause, show_traceback=show, log_tail=err.log_tail)]
        if err.log_paths:
            lines.append(logs_text_line([(n, str(p)) for n, p in err.log_paths.items()], failed=True))
        return "\n".join(lines)
    summary = RunSummary.from_result(result, tracking=tracking, show_traceback=show, log_tail=err.log_tail)
    return render_summary_text(summary, lineage=False)


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
    from nbexec.tracking.checkup import check_store

    checks = check_environment(plan) + check_store(plan.config)
    for check in checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_ENV


def run() -> None:
    """The ``nbexec`` program: :func:`main`, then exit with its code.

    SIGINT, SIGTERM and SIGHUP cancel a running job and write its outcome
    before the program exits (:class:`StopSignals`, installed here only: the
    library installs no signal handlers).

    Before exiting, the heap is frozen (``gc.freeze()``): with MLflow's import
    graph loaded, the interpreter's final garbage collections took ~0.5 s of
    every ``nbexec train`` (about a quarter of a no-op 2-rank job). The job is
    over and every file is closed by then; objects are still finalized as the
    modules are torn down. Only here, not in :func:`main`, which tests and
    other programs call in-process.
    """
    import gc

    code = main(signals=StopSignals().install())
    gc.freeze()
    raise SystemExit(code)


if __name__ == "__main__":
    run()
