"""The sbatch script and the launch spec a Slurm job's nodes read (pure: nothing written).

One task per node runs :mod:`nbexec.schedulers.slurm.node`, which starts that
node's torchrun agent under nbexec's runner (per-rank logs, events, root
cause). torchrun's c10d rendezvous is hosted by the first node of the
allocation. Values that reach the script are shell-quoted; the script holds
no secrets (they reach the job through its environment, like ``MLFLOW_*``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.config_fields import MAX_NPROC
from nbexec.schedulers.slurm.options import slurm_options

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.hardware import HardwareInfo
    from nbexec.plan import LaunchPlan

SLURM_DIR = "slurm"  # <run_dir>/slurm: job.sbatch, launch.json, job_id
SCRIPT_FILE = "job.sbatch"
SPEC_FILE = "launch.json"
NODE_MODULE = "nbexec.schedulers.slurm.node"
HEAD_ENV = "NBEXEC_SLURM_HEAD"

_OPTIONS = (  # SlurmOptions field -> sbatch option
    ("partition", "--partition"),
    ("account", "--account"),
    ("qos", "--qos"),
    ("constraint", "--constraint"),
    ("time", "--time"),
    ("mem", "--mem"),
)


def slurm_dir(run_dir: Path) -> Path:
    return run_dir / SLURM_DIR


def cpus_per_task(config: TrainingConfig) -> int:
    """CPUs for the one task per node: ``slurm.cpus_per_task``, else one per process."""
    cpus = slurm_options(config).cpus_per_task
    if cpus:
        return cpus
    nproc = config.launch.nproc
    return int(nproc) if nproc != "auto" else 1


def slurm_node_hardware(config: TrainingConfig) -> HardwareInfo:
    """The node Slurm will allocate, as the plan sees it (``nproc: auto`` = GPUs per node)."""
    from nbexec.hardware import GPUInfo, HardwareInfo

    gpus = slurm_options(config).gpus_per_node or 0
    return HardwareInfo(
        gpus=tuple(GPUInfo(i, "Slurm GPU (--gpus-per-node)", 0, f"slurm-gpu-{i}", None) for i in range(gpus)),
        cpu_count=min(MAX_NPROC, cpus_per_task(config)),
        platform="slurm",
        gpu_source="slurm" if gpus else "none",
        gpu_error=None if gpus else "no GPUs asked for (launch.slurm.gpus_per_node)",
        cuda_visible_devices=None,
    )


def _nodes(nnodes: int | str) -> str:
    low, _, high = str(nnodes).partition(":")
    return f"{low}-{high}" if high else low


def sbatch_options(plan: LaunchPlan) -> list[str]:
    """The ``#SBATCH`` options, each ``--name=value``."""
    config = plan.config
    options = slurm_options(config)
    out = [
        f"--job-name={plan.run_name}",
        f"--nodes={_nodes(config.launch.nnodes)}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus_per_task(config)}",
        f"--output={slurm_dir(plan.run_dir) / 'slurm-%j.out'}",
        f"--chdir={os.getcwd()}",
    ]
    if options.gpus_per_node:
        out.append(f"--gpus-per-node={options.gpus_per_node}")
    out += [f"{flag}={getattr(options, key)}" for key, flag in _OPTIONS if getattr(options, key)]
    out += list(options.extra_args)
    return out


def build_sbatch_script(plan: LaunchPlan, python: str | None = None) -> str:
    """The whole sbatch script for ``plan`` (shown by ``--dry-run``)."""
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {shlex.quote(option)}" for option in sbatch_options(plan)]
    node_cmd = [python or sys.executable, "-m", NODE_MODULE, str(plan.run_dir)]
    lines += [
        "# written by nbexec: one task per node starts that node's torchrun agent;",
        "# the first node of the allocation hosts the c10d rendezvous.",
        "set -euo pipefail",
        f'{HEAD_ENV}="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export {HEAD_ENV}",
        f"exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 {shlex.join(node_cmd)}",
        "",
    ]
    return "\n".join(lines)


def launch_spec(plan: LaunchPlan) -> dict[str, Any]:
    """What the node program needs beyond the job's environment (which carries the rest)."""
    return {
        "run_name": plan.run_name,
        "run_dir": str(plan.run_dir),
        "nproc": plan.nproc,
        "backend": str(plan.backend),
        "argv": list(plan.argv),
    }


def spec_json(plan: LaunchPlan) -> str:
    return json.dumps(launch_spec(plan), indent=2)
