"""``nbexec hpo``: a sweep (and the final training run) on the command line; its options serve ``%hpo`` too.

    nbexec hpo CONFIG --space SPACE.yaml --trials 20 [--study outputs/hpo/study.db] [--set k=v ...]
    nbexec hpo CONFIG --space SPACE.yaml --trials 20 --final [--backup PATH]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nbexec.contract import DEFAULT_STUDY_PATH  # not from the sweep: `nbexec train` builds this parser too


def add_hpo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nbexec hpo`` (and the ``%hpo`` magic)."""
    parser.add_argument("config", nargs="?", help="base YAML/JSON config (default: embedded demo config)")
    parser.add_argument("--space", help="search space: a YAML/JSON file (the %%hpo cell body in notebooks)")
    parser.add_argument("--trials", type=int, required=True, help="how many trials the study should have")
    parser.add_argument("--study", default=DEFAULT_STUDY_PATH, help=f"study SQLite file (default {DEFAULT_STUDY_PATH})")
    parser.add_argument("--study-name", help="study name (default: hpo-<backbone>-<study key>)")
    parser.add_argument("--objective", default="val_loss", help="metric to optimise (default val_loss)")
    parser.add_argument("--direction", default="minimize", choices=("minimize", "maximize"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config value (repeatable)")
    parser.add_argument("--nproc", help="processes per trial: a number or 'auto'")
    parser.add_argument("--output", help="directory for trial run directories (default: beside the study)")
    parser.add_argument("--seed", type=int, help="sampler seed (reproducible sweeps)")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow runs")
    parser.add_argument("--timeout", type=float, help="seconds before a trial's job is cancelled (it fails)")
    parser.add_argument("--final", action="store_true", help="then train the best config (run_final_training_workflow)")
    parser.add_argument("--backup", metavar="drive|PATH", help="with --final: back the checkpoint up right away")
    parser.add_argument("--quiet", action="store_true", help="print only the results, not the trials' lines")


def hpo_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`nbexec.hpo.run_hpo` from parsed options (all but config and space)."""
    overrides = list(args.overrides)
    if args.nproc:
        overrides.append(f"launch.nproc={args.nproc}")
    if args.no_tracking:
        overrides.append("tracking.enabled=false")
    if args.experiment:
        overrides.append(f"tracking.experiment={json.dumps(args.experiment)}")
    return {"n_trials": args.trials, "study_path": args.study, "study_name": args.study_name,
            "objective": args.objective, "direction": args.direction, "overrides": overrides,
            "output_dir": args.output, "seed": args.seed, "trial_timeout": args.timeout}


def backup_kwargs(backup: str | None) -> dict[str, Any]:
    """``--backup drive|PATH`` as run_final_training_workflow's backup arguments."""
    if not backup:
        return {}
    if backup.strip().lower() == "drive":
        return {"backup_enabled": True, "backup_to_drive": True}
    return {"backup_enabled": True, "backup_target": backup}


def hpo_command(args: argparse.Namespace) -> int:
    """``nbexec hpo``; errors are raised for the CLI's exit-code mapping."""
    from nbexec.errors import ConfigError
    from nbexec.hpo import run_hpo
    from nbexec.runner.sinks import TerminalSink

    if not args.space:
        raise ConfigError("nbexec hpo needs --space FILE (a YAML/JSON search space)", field="search_space")
    kwargs = hpo_kwargs(args)
    objective = args.objective
    sinks = None if args.quiet else (lambda trial: [TerminalSink(ranks=[0])])
    result = run_hpo(args.config, args.space, sinks=sinks, on_trial=lambda t: print(f"nbexec: {t.line(objective)}",
                                                                                      flush=True), **kwargs)
    print(result.report())
    if args.final:
        import warnings

        from nbexec.workflow import BackupWarning, run_final_training_workflow

        # the line printed below says how the backup went; Python's raw warning would repeat it
        warnings.filterwarnings("ignore", category=BackupWarning)
        final = run_final_training_workflow(result.study_path, study_name=result.study_name,
                                            overrides=kwargs["overrides"], stream=not args.quiet,
                                            **backup_kwargs(args.backup))
        print(f"nbexec: final run {final.result.run_name} {final.result.status.value}; {final.backup.message}\n"
              f"lineage ({final.lineage_path}):\n{final.lineage}")
    return 0
