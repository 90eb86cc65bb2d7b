"""The run handle of one node of a multi-node job: a local run whose failure is
explained by the earliest failing rank on *any* node whose run dir it can see.

A rank that dies on node 1 makes node 0's ranks fail a moment later (their
peer is gone); node 0's own error records would name a consequence. When the
nodes share a file system (or run on one machine), the other nodes' run dirs
(``<run_dir>.node<R>``, or node 0's from another node) hold the real cause.
"""

from __future__ import annotations

import re
from pathlib import Path

from nbexec.errors import RootCause
from nbexec.runner.handle import TrainingRun
from nbexec.runner.rootcause import find_root_cause
from nbexec.schedulers import node_run_dirs

_NODE_SUFFIX = re.compile(r"^(?P<base>.+)\.node\d+$")


def job_run_dirs(run_dir: Path) -> list[Path]:
    """Every node's run dir of the job ``run_dir`` belongs to (node 0's first), as far as visible."""
    match = _NODE_SUFFIX.match(run_dir.name)
    base = run_dir.with_name(match.group("base")) if match else run_dir
    dirs = node_run_dirs(base)
    return dirs if run_dir in dirs else [run_dir, *dirs]


def find_job_root_cause(run_dir: Path, exit_code: int | None) -> RootCause:
    """The earliest recorded failure on any node; this node's explanation when none is recorded."""
    causes = [find_root_cause(d, exit_code) for d in job_run_dirs(run_dir) if d.is_dir()]
    timed = [c for c in causes if c.time is not None]
    if timed:
        return min(timed, key=lambda c: c.time or 0.0)
    own = find_root_cause(run_dir, exit_code)
    return own if own.rank is not None else next((c for c in causes if c.rank is not None), own)


class MultiNodeRun(TrainingRun):
    """:class:`TrainingRun` of one node of a multi-node job (see the module doc)."""

    def _root_cause(self, exit_code: int) -> RootCause:
        return find_job_root_cause(self.plan.run_dir, exit_code)


__all__ = ["MultiNodeRun", "find_job_root_cause", "job_run_dirs"]
