"""``%hpo`` / ``%%hpo``: an Optuna sweep from a cell, its trials table updated in place as trials end.

    %hpo tiny.yaml --space space.yaml --trials 4
    %%hpo tiny.yaml --trials 4 --study outputs/hpo/study.db
    training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}

The options are ``nbexec hpo``'s; the cell body is the search space. Returns
the :class:`~nbexec.hpo.sweep.HpoResult` (with ``--final``, the
:class:`~nbexec.workflow.FinalTrainingResult`). An interrupt cancels the running
trial's job; run the same cell again to resume the study.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.utils.process import arg_split

from nbexec.commands.hpo import add_hpo_arguments

if TYPE_CHECKING:
    import argparse

    from nbexec.hpo.trial import TrialRecord


class _hpo_options(magic_arguments.ArgDecorator):
    def add_to_parser(self, parser: argparse.ArgumentParser, group: object) -> None:
        add_hpo_arguments(parser)


@magics_class
class HpoMagics(Magics):
    """The ``%hpo`` / ``%%hpo`` magics (registered by ``%load_ext nbexec``)."""

    @magic_arguments.magic_arguments()
    @_hpo_options()
    @line_cell_magic
    def hpo(self, line: str, cell: str | None = None) -> Any:
        """Run (or resume) an Optuna sweep whose trials are training jobs.

        ``%hpo [CONFIG] --space SPACE --trials N [options]``, or ``%%hpo [CONFIG] --trials N``
        with the search space (YAML) as the cell body.
        """
        try:
            args = self.hpo.parser.parse_args(arg_split(line, posix=not sys.platform.startswith("win")))
        except (UsageError, ValueError) as err:
            raise UsageError(f"{err}; see %hpo? for the options") from None
        space = cell if cell is not None and cell.strip() else args.space
        if cell is not None and cell.strip() and args.space:
            raise UsageError("give the search space either as the cell body or as --space, not both")
        if not space:
            raise UsageError("no search space: put it in the cell body (%%hpo) or pass --space FILE")

        from nbexec.commands.hpo import backup_kwargs, hpo_kwargs
        from nbexec.errors import ConfigError, EnvironmentCheckError, TrackingError, TrainingFailed
        from nbexec.hpo import run_hpo
        from nbexec.notebook.errors import failure_lines, shown_briefly
        from nbexec.workflow import run_final_training_workflow

        kwargs = hpo_kwargs(args)
        in_kernel = getattr(self.shell, "kernel", None) is not None
        table = _TrialsTable(str(args.objective), kernel=in_kernel)
        sinks = None
        if not in_kernel and not args.quiet:  # a terminal IPython streams rank 0's lines, as the CLI does
            from nbexec.runner.sinks import TerminalSink

            sinks = lambda trial: [TerminalSink(ranks=[0])]  # noqa: E731
        try:
            result = run_hpo(args.config, space, on_trial=table.add, sinks=sinks, **kwargs)
            table.done(result)
            if not args.final:
                return result
            return run_final_training_workflow(result.study_path, study_name=result.study_name,
                                               overrides=kwargs["overrides"], stream=not args.quiet,
                                               **backup_kwargs(args.backup))
        except (ConfigError, EnvironmentCheckError, TrackingError) as err:
            raise shown_briefly(err) from None
        except TrainingFailed as err:
            raise shown_briefly(err, failure_lines(err)) from None
        except KeyboardInterrupt as interrupt:
            raise shown_briefly(interrupt, ["KeyboardInterrupt: the running trial was cancelled; "
                                            "run the cell again to resume the study"]) from None


class _TrialsTable:
    """One display output listing the trials as they end (plain lines in a terminal IPython)."""

    def __init__(self, objective: str, *, kernel: bool) -> None:
        self.objective = objective
        self.kernel = kernel
        self.trials: list[TrialRecord] = []
        self._handle: Any = None

    def add(self, trial: TrialRecord) -> None:
        self.trials.append(trial)
        if not self.kernel:
            print(f"nbexec: {trial.line(self.objective)}", flush=True)
            return
        self._show(f"{len(self.trials)} trial(s) run; next one running...")

    def done(self, result: Any) -> None:
        if not self.kernel:
            print(result.report())
            return
        self._show(None, result)

    def _show(self, status: str | None, result: Any = None) -> None:
        from IPython.display import display

        from nbexec.notebook.hpo_view import render_trials_html

        trials = result.trials if result is not None else self.trials
        html = render_trials_html(trials, self.objective, status=status,
                                  best=result.best if result is not None else None,
                                  title=result.study_name if result is not None else None)
        text = result.report() if result is not None else "\n".join(t.line(self.objective) for t in trials)
        bundle = {"text/html": html, "text/plain": text}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def register(ipython: Any) -> None:
    """Register ``%hpo`` with an IPython shell."""
    ipython.register_magics(HpoMagics(ipython))
