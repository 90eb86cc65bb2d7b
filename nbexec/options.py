"""The launch options shared by ``nbexec train`` and the ``%train`` magic.

One argument list and one mapping from parsed options to :func:`nbexec.executor.prepare`,
so the command line and the notebook cannot drift apart. Works with any
``argparse.ArgumentParser`` (IPython's ``MagicArgumentParser`` is one).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan

SCRIPT_ARGS_SEPARATOR = "--"


def add_train_arguments(parser: argparse.ArgumentParser, *, ranks_default: str = "all") -> None:
    """Add the ``train`` options (config, launch, output, tracking, display) to ``parser``.

    Args:
        parser: the parser to extend.
        ranks_default: which ranks' lines show without ``--rank``, for the help text.
    """
    parser.add_argument("config", nargs="?", help="YAML/JSON config file (default: embedded demo config)")
    parser.add_argument("--nproc", help="processes on this machine: a number or 'auto'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.learning_rate=3e-5 (repeatable)")
    parser.add_argument("--output", help="directory that holds run directories (output.dir)")
    parser.add_argument("--run-name", help="name of the run directory (default: generated)")
    parser.add_argument("--data", help="dataset directory for the trainer (data.path)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--entrypoint", help="training script to run instead of the built-in trainer")
    target.add_argument("-m", "--module", help="module to run (like python -m) instead of the built-in trainer")
    parser.add_argument("--resume", metavar="CHECKPOINT_DIR", help="resume from an earlier run's checkpoint")
    parser.add_argument("--rank", dest="ranks", type=rank_number, action="append",
                        help=f"show only these ranks' lines (repeatable; default: {ranks_default})")
    parser.add_argument("--quiet", action="store_true", help="do not stream the job's lines")
    parser.add_argument("--metric-lines", action=argparse.BooleanOptionalAction, default=None,
                        help="print nbexec's '[nbexec] step N name=value' line for each logged step "
                             "(default: off for the built-in trainer, which prints its own; on for your script)")
    parser.add_argument("--no-tracking", action="store_true", help="do not open an MLflow run")
    parser.add_argument("--experiment", help="MLflow experiment name (tracking.experiment)")
    parser.add_argument("--backup", metavar="drive|PATH|off",
                        help="back the checkpoint up after a successful run (backup.target; 'off' disables)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan (command, env, run dir) and stop")
    add_scale_out_arguments(parser)


def rank_number(text: str) -> int:
    """``--rank``'s value: a rank of the job, 0 or more (the magic says the same).

    Raises:
        argparse.ArgumentTypeError: not a whole number >= 0 (argparse exits 2 with it).
    """
    try:
        rank = int(text)
    except ValueError:
        rank = -1
    if rank < 0:
        raise argparse.ArgumentTypeError(f"--rank takes ranks 0, 1, ...; not {text}")
    return rank


def check_ranks(ranks: Sequence[int] | None, plan: LaunchPlan) -> None:
    """Refuse ``--rank`` values the job will not have (they would hide every line).

    Raises:
        ConfigError: naming the rank and the job's ranks.
    """
    from nbexec.errors import ConfigError

    world = plan.nproc * plan.config.launch.max_nodes
    beyond = [r for r in ranks or () if r >= world]
    if beyond:
        raise ConfigError(
            f"--rank {beyond[0]}: the job has ranks 0 to {world - 1} ({plan.nproc} process(es) per node "
            f"x {plan.config.launch.max_nodes} node(s)); pick one of those, or leave --rank out",
            field="ranks", value=beyond[0],
        )


def add_scale_out_arguments(parser: argparse.ArgumentParser) -> None:
    """Multi-node and scheduler options (launch.nnodes, node_rank, rdzv_*, scheduler)."""
    parser.add_argument("--nnodes", help="nodes in the job: a number or an elastic range MIN:MAX (launch.nnodes)")
    parser.add_argument("--node-rank", type=int, help="this node's rank, 0 hosts the rendezvous (launch.node_rank)")
    parser.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                        help="node 0's address and a free port, reachable by every node (launch.rdzv_endpoint)")
    parser.add_argument("--rdzv-id", help="rendezvous id shared by all nodes (launch.rdzv_id)")
    parser.add_argument("--scheduler", metavar="local|slurm|azureml",
                        help="who runs the job: here, a Slurm job or an AzureML job (launch.scheduler; "
                        "not launch.backend, which is gloo/nccl)")


def split_script_args(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split ``[options] -- [script args]`` at the first ``--``.

    Returns:
        ``(options, script_args)``; ``script_args`` is None when there is no ``--``.
    """
    argv = list(argv)
    if SCRIPT_ARGS_SEPARATOR not in argv:
        return argv, None
    cut = argv.index(SCRIPT_ARGS_SEPARATOR)
    return argv[:cut], argv[cut + 1 :]


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides the options stand for (``--set`` ones first)."""
    from nbexec.config import quote_value

    overrides = list(args.overrides or [])
    if getattr(args, "no_tracking", False):
        overrides.append("tracking.enabled=false")
    if getattr(args, "experiment", None):
        overrides.append(f"tracking.experiment={quote_value(args.experiment)}")
    for option, key in (("nnodes", "nnodes"), ("node_rank", "node_rank"), ("rdzv_endpoint", "rdzv_endpoint"),
                        ("rdzv_id", "rdzv_id"), ("scheduler", "scheduler")):
        value = getattr(args, option, None)
        if value is not None:
            overrides.append(f"launch.{key}={quote_value(value) if isinstance(value, str) else json.dumps(value)}")
    backup = getattr(args, "backup", None)
    if backup is not None:
        if backup.strip().lower() == "off":
            overrides.append("backup.enabled=false")
        else:
            overrides += ["backup.enabled=true", f"backup.target={quote_value(backup)}"]
    return overrides


def prepare_kwargs(args: argparse.Namespace, script_args: Sequence[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`nbexec.executor.prepare` (all but the config)."""
    return {
        "overrides": config_overrides(args),
        "output_dir": args.output,
        "data_path": args.data,
        "nproc": args.nproc,
        "run_name": args.run_name,
        "entrypoint": args.entrypoint,
        "module": args.module,
        "script_args": list(script_args) if script_args is not None else None,
        "resume_from": args.resume,
    }


def prepare_from_args(
    args: argparse.Namespace, script_args: Sequence[str] | None = None, *, config: Any = None
) -> LaunchPlan:
    """Resolve and check the launch the options describe (nothing is started).

    Args:
        args: parsed options (from a parser built with :func:`add_train_arguments`).
        script_args: what followed ``--``.
        config: the config source; None takes ``args.config`` (a path, or the defaults).

    Raises:
        ConfigError, EnvironmentCheckError: as :func:`nbexec.executor.prepare`; ConfigError
            also for a ``--rank`` the job will not have.
    """
    from nbexec.executor import prepare

    plan = prepare(config if config is not None else args.config, **prepare_kwargs(args, script_args))
    check_ranks(getattr(args, "ranks", None), plan)
    return plan


__all__ = [
    "add_train_arguments",
    "add_scale_out_arguments",
    "rank_number",
    "check_ranks",
    "split_script_args",
    "config_overrides",
    "prepare_kwargs",
    "prepare_from_args",
]
