"""Multi-node torchrun: the c10d rendezvous arguments and the commands other nodes run.

Every node runs its own torchrun agent (``nbexec train ... --node-rank R``);
the agents meet at node 0's rendezvous (``launch.rdzv_endpoint``) under one
``rdzv_id``. Two facts of torchrun's c10d rendezvous shape this module:

- ``--node-rank`` is ignored by c10d (torchrun warns): node 0 is made the
  rendezvous *host* with ``--rdzv-conf is_host=1`` (the others ``is_host=0``).
- global ranks are given to nodes sorted by their address (then pid), not by
  node rank. Node 0 passes ``--local-addr`` = the rendezvous host, an address
  that sorts before host names, so global rank 0 (the rank that saves the
  checkpoint and reports metrics) normally runs on node 0, where the MLflow
  run is. Other nodes keep their own run dir: ``<run_name>.node<R>``.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbexec.config import LaunchConfig
    from nbexec.plan import LaunchPlan

# Filled in by the node program of a Slurm job (nbexec.schedulers.slurm.node).
SLURM_HEAD = "{head}"
SLURM_IS_HOST = "{is_host}"


def rendezvous_args(launch: LaunchConfig, *, nproc: int, run_name: str) -> list[str]:
    """torchrun's ``--nnodes ... --rdzv-*`` arguments for this node.

    Args:
        launch: the launch section (``nnodes``, ``node_rank``, ``rdzv_endpoint``, ``rdzv_id``).
        nproc: processes on this node.
        run_name: the run's name, the default ``rdzv_id``.
    """
    rdzv_id = launch.rdzv_id or run_name
    common = ["--nnodes", str(launch.nnodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
    if not launch.is_multinode:
        return [*common, "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", rdzv_id]
    if launch.scheduler == "slurm":
        port = launch.slurm.get("rdzv_port", 29500)
        return [*common, "--rdzv-endpoint", f"{SLURM_HEAD}:{port}", "--rdzv-id", rdzv_id,
                "--rdzv-conf", f"is_host={SLURM_IS_HOST}", "--local-addr", SLURM_HEAD]
    if launch.scheduler == "azureml":  # for the record only: AzureML's PyTorch distribution starts the ranks
        return [*common, "--rdzv-endpoint", "$MASTER_ADDR:$MASTER_PORT", "--rdzv-id", rdzv_id]
    assert launch.rdzv_endpoint is not None  # checked with the config
    host = launch.rdzv_endpoint.rpartition(":")[0].strip("[]")
    args = [*common, "--rdzv-endpoint", launch.rdzv_endpoint, "--rdzv-id", rdzv_id]
    if launch.node_rank == 0:
        return [*args, "--rdzv-conf", "is_host=1", "--local-addr", host]
    return [*args, "--rdzv-conf", "is_host=0"]


def node_run_name(run_name: str, node_rank: int) -> str:
    """The run name node ``node_rank`` uses: node 0's, or ``<name>.node<R>``."""
    return run_name if node_rank == 0 else f"{run_name}.node{node_rank}"


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
