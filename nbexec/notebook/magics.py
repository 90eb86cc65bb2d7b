"""``%train`` and ``%%train``: launch a training job from a cell and watch it there.

    %load_ext nbexec
    result = %train config.yaml --nproc 2 --set training.epochs=1
    run = %train config.yaml --background        # the handle, at once

    %%train --nproc auto --experiment ner
    model: {backbone: tiny-encoder}
    training: {learning_rate: 2.0e-5, batch_size: 16, epochs: 2}

    %mlflow_ui                  # an MLflow UI on 127.0.0.1 for the store: runs become links
    %mlflow_ui --stop

The magic renders and forwards: the options are the command line's
(:mod:`nbexec.options`), the job goes through :func:`nbexec.launch`, and the
run is shown by a :class:`~nbexec.notebook.live.LiveRunView` sink. An
interrupt (the kernel's stop button) cancels the job: every process of it is
stopped and the run ends KILLED before the ``KeyboardInterrupt`` goes on. So
does a shutdown or restart of the kernel while a job runs (``--background``
or not): see :mod:`nbexec.notebook.live_runs`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.utils.process import arg_split

from nbexec.options import add_train_arguments, split_script_args

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun
    from nbexec.runner.lines import LogLine


class _train_options(magic_arguments.ArgDecorator):
    """The options of ``nbexec train``, from the one place that defines them."""

    def add_to_parser(self, parser: argparse.ArgumentParser, group: object) -> None:
        add_train_arguments(parser, ranks_default="0; --all-ranks for every rank")


@magics_class
class TrainMagics(Magics):
    """The ``%train`` / ``%%train`` magics (registered by ``%load_ext nbexec``)."""

    @magic_arguments.magic_arguments()
    @_train_options()
    @magic_arguments.argument("--background", action="store_true",
                              help="return the run handle at once; the view keeps updating in this cell")
    @magic_arguments.argument("--all-ranks", action="store_true",
                              help="show every rank's lines (and torchrun's own)")
    @magic_arguments.argument("--tail", type=int, default=None, metavar="N",
                              help="lines the view keeps (default 40); every line is in the log files")
    @line_cell_magic
    def train(self, line: str, cell: str | None = None) -> Any:
        """Run a training job (torchrun DDP) and show it live in this cell.

        ``%train [CONFIG] [options] [-- script args]``, or ``%%train [options]``
        with the YAML config as the cell body. Returns the TrainingResult
        (``--background``: the TrainingRun handle at once; ``--dry-run``: None).
        A failed run raises TrainingFailed naming the rank and its exception.
        """
        try:
            argv = arg_split(line, posix=not sys.platform.startswith("win"))
        except ValueError as err:  # unbalanced quotes
            raise UsageError(f"cannot read the options {line!r}: {err}") from None
        options, script_args = split_script_args(argv)
        try:
            args = self.train.parser.parse_args(options)
        except UsageError as err:
            raise UsageError(f"{err}; see %train? for the options") from None
        config = _config_source(args, cell)
        ranks = _ranks(args)
        if args.tail is not None and args.tail < 1:
            raise UsageError(f"--tail must be at least 1, not {args.tail}")

        from nbexec.errors import ConfigError, EnvironmentCheckError
        from nbexec.notebook.errors import shown_briefly
        from nbexec.options import prepare_from_args

        try:
            plan = prepare_from_args(args, script_args, config=config)
        except (ConfigError, EnvironmentCheckError) as err:
            raise shown_briefly(err) from None
        if args.dry_run:
            from nbexec.schedulers import get_scheduler

            dry = get_scheduler(plan.config).dry_run(plan)
            dry.write()
            print(dry)
            return None
        launch_cfg = plan.config.launch
        if launch_cfg.is_multinode and launch_cfg.scheduler == "local" and launch_cfg.node_rank == 0:
            from nbexec.schedulers.multinode import describe_peers

            print(describe_peers(plan))  # what every other node must run
        if getattr(self.shell, "kernel", None) is None:  # a terminal IPython: no display outputs
            return _run_in_terminal(plan, args, ranks)
        return _run_in_cell(plan, args, ranks)


    @magic_arguments.magic_arguments()
    @magic_arguments.argument("--store", metavar="URI",
                              help="tracking store (default: where runs go: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    @magic_arguments.argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    @magic_arguments.argument("--stop", action="store_true", help="stop the UI serving the store")
    @line_magic
    def mlflow_ui(self, line: str) -> Any:
        """Start an MLflow UI on 127.0.0.1 for the tracking store, or show the one already running.

        While it runs, run summaries and the panel's history link each run to its page
        (in MLflow's "Machine learning" view). It stops with the kernel, or with
        ``%mlflow_ui --stop``. Returns the UI's handle (``.url``, ``.stop()``).
        """
        args = magic_arguments.parse_argstring(self.mlflow_ui, line)
        from nbexec.errors import TrackingError
        from nbexec.notebook.errors import shown_briefly
        from nbexec.tracking.ui import start_ui, stop_ui

        try:
            if args.stop:
                stopped = stop_ui(args.store)
                print(f"stopped the MLflow UI at {stopped.url}" if stopped else "no MLflow UI runs for this store")
                return None
            return start_ui(args.store, port=args.port)
        except TrackingError as err:
            raise shown_briefly(err) from None


def _config_source(args: argparse.Namespace, cell: str | None) -> str | None:
    if cell is None or not cell.strip():
        return None  # args.config (a path) or the defaults
    if args.config:
        raise UsageError(
            f"give the config either as the cell body or as CONFIG ({args.config!r}), not both; "
            "use --set KEY=VALUE to change a file's values"
        )
    return cell


def _ranks(args: argparse.Namespace) -> tuple[int, ...] | None:
    if args.all_ranks and args.ranks:
        raise UsageError("--all-ranks and --rank exclude each other: drop one")
    if args.all_ranks:
        return None
    if args.ranks:
        bad = [r for r in args.ranks if r < 0]
        if bad:
            raise UsageError(f"--rank takes ranks 0, 1, ...; not {bad[0]}")
        return tuple(args.ranks)
    return (0,)


def _run_in_cell(plan: LaunchPlan, args: argparse.Namespace, ranks: tuple[int, ...] | None) -> Any:
    from IPython.display import display

    from nbexec.executor import launch
    from nbexec.notebook.errors import shown_briefly
    from nbexec.notebook.live import LiveRunView
    from nbexec.notebook.live_runs import track
    from nbexec.notebook.stacks_button import StacksButton
    from nbexec.notebook.tail import DEFAULT_TAIL
    from nbexec.tracking.tags import git_tags

    view = LiveRunView(
        plan,
        ranks=ranks,
        tail=args.tail or DEFAULT_TAIL,
        quiet=args.quiet,
        show_traceback=args.background,  # in the foreground the cell's error output shows it
        git=git_tags(),
    )
    view.show()
    stacks = StacksButton()  # where every rank is, on demand (and on a stall)
    display(stacks.widget)
    try:
        run = launch(plan=plan, sinks=[view, stacks])
    except BaseException as err:
        view.fail_to_start(err)
        if isinstance(err, Exception):
            raise shown_briefly(err) from None
        raise
    track(run)  # cancelled if the kernel shuts down while it runs
    view.attach(run)
    if args.background:
        return run
    return _shown(_wait_in_cell(run))


def _wait_in_cell(run: TrainingRun) -> TrainingResult:
    """Wait for a foreground job; an interrupt cancels it (nothing is left running)."""
    from nbexec.errors import TrainingCancelled, TrainingFailed
    from nbexec.notebook.errors import failure_lines, shown_briefly

    try:
        run.wait()
    except KeyboardInterrupt as interrupt:
        _cancel(run)
        raise shown_briefly(
            interrupt,
            [f"KeyboardInterrupt: run {run.name} cancelled ({run.status.value}); logs in {run.plan.log_dir}"],
        ) from None
    try:
        return run.result()
    except TrainingFailed as err:
        raise shown_briefly(err, failure_lines(err)) from None
    except TrainingCancelled as err:
        raise shown_briefly(err) from None


def _cancel(run: TrainingRun) -> None:
    try:
        run.cancel()
    except KeyboardInterrupt:  # interrupted again while stopping: stop now, without the grace period
        run.cancel(grace=0.0)


def _run_in_terminal(plan: LaunchPlan, args: argparse.Namespace, ranks: tuple[int, ...] | None) -> Any:
    """Terminal IPython: lines printed as the CLI prints them, the summary as text at the end."""
    from nbexec.errors import TrainingFailed
    from nbexec.executor import launch
    from nbexec.notebook.errors import failure_lines, shown_briefly
    from nbexec.notebook.live_runs import track
    from nbexec.notebook.tail import is_shown
    from nbexec.render.summary import RunSummary, render_summary_text
    from nbexec.runner.sinks import Sink, StartedLine, TerminalSink
    from nbexec.tracking.tags import git_tags

    class RankLines(TerminalSink):
        def on_lines(self, lines: Sequence[LogLine]) -> None:
            super().on_lines([ln for ln in lines if is_shown(ln, ranks)])

        def on_partial(self, lines: Sequence[LogLine]) -> None:
            super().on_partial([ln for ln in lines if is_shown(ln, ranks)])

    sinks: list[Sink] = [StartedLine(plan)]  # once the job is up: an error that stops it comes alone
    if not args.quiet:
        sinks.append(RankLines())
    run = launch(plan=plan, sinks=sinks)
    track(run)  # cancelled if the kernel shuts down while it runs
    if args.background:
        return run
    try:
        run.wait()
    except KeyboardInterrupt:
        _cancel(run)
        raise
    try:
        result = run.result()
    except TrainingFailed as err:
        raise shown_briefly(err, failure_lines(err)) from None
    print(render_summary_text(RunSummary.from_result(result, tracking=run.tracking, git=git_tags())))
    return _shown(result)


# The result the view has just shown in full, and the cell it was shown in. The cell's own
# ``Out[n]`` would only repeat it, so it shows nothing; ``_``, ``Out[n]`` and ``result = %train``
# still hold the TrainingResult, and showing it in any later cell displays it as usual.
_just_shown: tuple[int, int] | None = None


def _shown(result: TrainingResult) -> TrainingResult:
    global _just_shown
    from IPython import get_ipython

    shell = get_ipython()
    _just_shown = (id(result), shell.execution_count) if shell is not None else None
    return result


def _display_result(result: TrainingResult) -> None:
    """How IPython displays a TrainingResult (registered by ``%load_ext nbexec``)."""
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    if shell is not None and _just_shown == (id(result), shell.execution_count):
        return  # the summary right above says it all
    display({"text/plain": repr(result)}, raw=True)


def register(ipython: Any) -> None:
    """Register the magics with an IPython shell (``%load_ext nbexec`` calls this)."""
    ipython.register_magics(TrainMagics(ipython))
    from nbexec.result import TrainingResult

    ipython.display_formatter.ipython_display_formatter.for_type(TrainingResult, _display_result)
    from nbexec.notebook.hpo_magic import register as register_hpo  # %hpo; Optuna loads only when it runs

    register_hpo(ipython)
