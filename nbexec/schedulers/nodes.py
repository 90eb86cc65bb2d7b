"""The run dirs of a job on several nodes, and its root cause: shared by the multi-node and Slurm schedulers.

Node 0 keeps the run dir (``<output_dir>/<run_name>``); every other node keeps
its own beside it, ``<run_name>.node<R>``. A rank that dies on one node makes
the others fail a moment later, so a job's root cause is the earliest failure
recorded on any node whose run dir can be seen.
"""

from __future__ import annotations

import re
from pathlib import Path

from nbexec.errors import RootCause
from nbexec.runner.rootcause import find_root_cause

_NODE_SUFFIX = re.compile(r"^(?P<base>.+)\.node\d+$")


def node_run_name(run_name: str, node_rank: int) -> str:
    """The run name node ``node_rank`` uses: node 0's, or ``<name>.node<R>``."""
    return run_name if node_rank == 0 else f"{run_name}.node{node_rank}"


def node_run_dirs(run_dir: Path) -> list[Path]:
    """Node 0's run dir and the other nodes' (``<run_dir>.node<R>``) that exist."""
    siblings = sorted(run_dir.parent.glob(f"{run_dir.name}.node*"))
    return [run_dir, *[p for p in siblings if p.name[len(run_dir.name) + 5 :].isdigit()]]


def job_run_dirs(run_dir: Path) -> list[Path]:
    """Every node's run dir of the job ``run_dir`` belongs to (node 0's first), as far as visible."""
    match = _NODE_SUFFIX.match(run_dir.name)
    base = run_dir.with_name(match.group("base")) if match else run_dir
    dirs = node_run_dirs(base)
    return dirs if run_dir in dirs else [run_dir, *dirs]


def find_job_root_cause(run_dir: Path, exit_code: int | None) -> RootCause:
    """The earliest recorded failure on any node; this node's explanation when none is recorded.

    A rank that dies on node 1 makes node 0's ranks fail a moment later (their
    peer is gone): node 0's own error records would name a consequence. When
    the nodes share a file system (or run on one machine), the other nodes' run
    dirs hold the real cause.
    """
    causes = [find_root_cause(d, exit_code) for d in job_run_dirs(run_dir) if d.is_dir()]
    timed = [c for c in causes if c.time is not None]
    if timed:
        return min(timed, key=lambda c: c.time or 0.0)
    own = find_root_cause(run_dir, exit_code)
    return own if own.rank is not None else next((c for c in causes if c.rank is not None), own)


__all__ = ["find_job_root_cause", "job_run_dirs", "node_run_dirs", "node_run_name"]
