"""``nbexec stacks``: where every rank of a running job is, from any terminal.

    nbexec stacks RUN_DIR [--rank R ...] [--native]

Reads the ranks' pids from the run dir (``logs/rank<N>.process.json``, written
by each rank's bootstrap), asks each for the stack of every thread without
stopping it, prints the ranks side by side and saves them to
``logs/stacks-<time>.txt``. Works on this machine's ranks (run it on each node
of a multi-node job).
"""

from __future__ import annotations

import argparse
import sys


def stacks_command(args: argparse.Namespace) -> int:
    """Print and save the stacks of the job in ``args.run_dir``; 0 when every rank asked answered."""
    from pathlib import Path

    from nbexec.errors import NbexecError
    from nbexec.stacks.snapshot import take_stacks

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"nbexec: {run_dir} is not a directory; give a run directory (outputs/<run name>)", file=sys.stderr)
        return 2
    try:
        snap = take_stacks(run_dir, args.ranks, native=args.native, timeout=args.timeout)
    except NbexecError as err:
        print(f"nbexec: {err}", file=sys.stderr)
        return 1
    print(snap, end="")
    missing = [r for r in snap.ranks if r.main is None]
    for r in missing:
        print(f"nbexec: rank {r.rank}: {r.error or 'no stacks'}", file=sys.stderr)
    return 1 if missing else 0


def add_stacks_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nbexec stacks``."""
    parser.add_argument("run_dir", help="the job's run directory (outputs/<run name>)")
    parser.add_argument("--rank", dest="ranks", type=int, action="append", metavar="R",
                        help="only this rank (repeatable; default: every rank)")
    parser.add_argument("--native", action="store_true",
                        help="also C/C++ frames, through py-spy dump --native (pip install 'nbexec[stacks]')")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for the ranks' dumps (default 5)")
