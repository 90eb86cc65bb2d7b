"""The sbatch script, the node program's argv and Slurm's states (pure: no cluster needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nbexec.config import load_config
from nbexec.executor import prepare
from nbexec.plan import plan_training
from nbexec.schedulers import get_scheduler
from nbexec.schedulers.slurm.commands import _state
from nbexec.schedulers.slurm.node import node_argv
from nbexec.schedulers.slurm.script import build_sbatch_script, slurm_node_hardware


def test_sbatch_script_for_two_gpu_nodes(tmp_path: Path) -> None:
    raw = {"launch": {"nnodes": 2, "scheduler": "slurm", "backend": "nccl", "slurm": {
        "partition": "gpu", "account": "proj-1", "time": "01:30:00", "gpus_per_node": 4,
        "cpus_per_task": 32, "mem": "200G", "extra_args": ["--exclusive", "--comment=it's mine"]}},
        "output": {"run_name": "big"}}
    config = load_config(raw)
    plan = plan_training(config, output_dir=tmp_path, hardware=slurm_node_hardware(config), base_env={},
                         rendezvous=get_scheduler(config).rendezvous_args)  # what prepare() passes
    assert plan.nproc == 4 and plan.backend == "nccl"  # auto: one process per GPU of a node
    run_dir = tmp_path / "big"
    assert build_sbatch_script(plan, python="/venv/bin/python") == "\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=big",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=32",
        f"#SBATCH --output={run_dir}/slurm/slurm-%j.out",
        f"#SBATCH --chdir={os.getcwd()}",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj-1",
        "#SBATCH --time=01:30:00",
        "#SBATCH --mem=200G",
        "#SBATCH --exclusive",
        "#SBATCH '--comment=it'\"'\"'s mine'",
        "# written by nbexec: one task per node starts that node's torchrun agent;",
        "# the first node of the allocation hosts the c10d rendezvous.",
        "set -euo pipefail",
        'NBEXEC_SLURM_HEAD="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        "export NBEXEC_SLURM_HEAD",
        f"exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 /venv/bin/python -m nbexec.schedulers.slurm.node {run_dir}",
        "",
    ])
    assert list(plan.argv[3:17]) == [
        "--nnodes", "2", "--nproc-per-node", "4", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "{head}:29500", "--rdzv-id", "big", "--rdzv-conf", "is_host={is_host}",
        "--local-addr", "{head}",
    ]
    # each node fills in the head; only the first hosts the rendezvous and claims rank 0
    assert node_argv(list(plan.argv), "gpu-07", 0)[3:17] == [
        "--nnodes", "2", "--nproc-per-node", "4", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "gpu-07:29500", "--rdzv-id", "big", "--rdzv-conf", "is_host=1",
        "--local-addr", "gpu-07",
    ]
    other = node_argv(list(plan.argv), "gpu-07", 1)
    assert "is_host=0" in other and "--local-addr" not in other


def test_single_node_job_uses_a_local_rendezvous(tmp_path: Path) -> None:
    plan = prepare({"launch": {"nproc": 2, "scheduler": "slurm"}, "output": {"dir": str(tmp_path)}})
    assert list(plan.argv[:13]) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", plan.run_name,
    ]
    dry = get_scheduler(plan.config).dry_run(plan).text
    assert "#SBATCH --cpus-per-task=2" in dry  # one CPU per process by default
    assert "sbatch script:\n#!/bin/bash" in dry


def test_slurm_states_and_exit_codes() -> None:
    assert _state("COMPLETED", "0:0", "None").returncode == 0
    failed = _state("FAILED", "1:0", "NonZeroExitCode")
    assert failed.terminal and failed.returncode == 1 and failed.reason == "NonZeroExitCode"
    assert _state("CANCELLED", "0:15", "None").returncode == -15
    assert _state("CANCELLED+", "0:0", "").state == "CANCELLED"
    assert not _state("RUNNING", "0:0", "").terminal
