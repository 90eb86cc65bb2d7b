"""Multi-node torchrun on machines you start yourself: the commands other nodes run, the job's root cause.

Every node runs its own torchrun agent (``nbexec train ... --node-rank R``);
the agents meet at node 0's rendezvous (``launch.rdzv_endpoint``) under one
``rdzv_id`` (the arguments: :func:`nbexec.plan.torchrun_rendezvous`). Node 0
owns the run dir and the MLflow run; other nodes keep their own run dir,
``<run_name>.node<R>``. A rank that dies on one node makes the others fail a
moment later, so the root cause is the earliest failure on any node.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from nbexec.runner.job import LocalLauncher
from nbexec.schedulers.api import DryRun, Scheduler, TrackingMode
from nbexec.schedulers.nodes import find_job_root_cause, node_run_name

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan


def peer_command(plan: LaunchPlan, node_rank: int) -> list[str]:
    """The argv node ``node_rank`` must run to join node 0's job.

    It reads node 0's resolved ``config.yaml`` (copy it over when the file
    system is not shared; secret values are redacted there: give them by
    environment or ``--set``).
    """
    launch = plan.config.launch
    argv = [
        "nbexec", "train", str(plan.config_path),
        "--nproc", str(plan.nproc),
        "--nnodes", str(launch.nnodes),
        "--node-rank", str(node_rank),
        "--rdzv-endpoint", str(launch.rdzv_endpoint),
        "--rdzv-id", launch.rdzv_id or plan.run_name,
        "--output", str(plan.run_dir.parent),
        "--run-name", node_run_name(plan.run_name, node_rank),
    ]
    return argv


def describe_peers(plan: LaunchPlan) -> str:
    """What ``--dry-run`` (and the launch) shows: the command every other node runs."""
    launch = plan.config.launch
    if launch.node_rank != 0:
        return (f"node {launch.node_rank} of {launch.nnodes}: joins the rendezvous at "
                f"{launch.rdzv_endpoint} (id {launch.rdzv_id}); node 0 owns the MLflow run")
    lines = [f"nodes:      {launch.nnodes}, this is node 0 (rendezvous host {launch.rdzv_endpoint})",
             "run on each other node (same code and data paths):"]
    for rank in range(1, launch.max_nodes):
        lines.append(f"  node {rank}: {shlex.join(peer_command(plan, rank))}")
    return "\n".join(lines)


class MultiNodeScheduler(Scheduler):
    """One node of a multi-node torchrun job on machines you start yourself (``launch.nnodes`` > 1)."""

    name = "multinode"
    tracking = TrackingMode.DEFERRED  # node 0's launcher owns the MLflow run

    def dry_run(self, plan: LaunchPlan) -> DryRun:
        return DryRun(f"{plan.describe()}\n{describe_peers(plan)}")

    def launcher(self, plan: LaunchPlan) -> LocalLauncher:
        return LocalLauncher(find_cause=find_job_root_cause)  # root cause: the earliest on any node
