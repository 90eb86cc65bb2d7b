"""Write and execute ``05_scale_out.ipynb`` (kept apart from build.py's list to merge cleanly).

    python notebooks/build_scale_out.py            # write + execute
    python notebooks/build_scale_out.py --no-run   # write only
"""

from __future__ import annotations

import sys

from build import HERE, code, execute, md, write

SCALE_OUT = [
    md("""
# Outgrowing one machine: multi-node torchrun, Slurm, AzureML

The same config, magics and API reach the engines that run big jobs; nbexec does not
manage a cluster itself.

- **Multi-node torchrun** (`--nnodes`, `--node-rank`, `--rdzv-endpoint`, `--rdzv-id`):
  every node runs its own `torchrun` agent; node 0 hosts the c10d rendezvous, owns the
  MLflow run and prints the exact command every other node runs.
- **Schedulers** (`--scheduler local|slurm|azureml`, config `launch.scheduler`; not to be
  confused with `launch.backend`, which is torch.distributed's `gloo`/`nccl`): the same
  plan becomes an sbatch job or an AzureML command job, with a dry run that shows exactly
  what would be submitted and a handle like a local run's.
"""),
    code("%load_ext nbexec"),
    md("""
## Multi-node: the dry run shows every node's command

Node 0's address and a free port form the rendezvous endpoint. The dry run prints node 0's
`torchrun` command and, for each other node, the `nbexec train` command to run there
(same code and data paths; node 0's resolved `config.yaml` is read, so copy it over when
the file system is not shared).
"""),
    code("%train tiny.yaml --dry-run --nnodes 2 --rdzv-endpoint 10.0.0.5:29500 --run-name ner-2nodes"),
    code("""
# NBVAL_CHECK_OUTPUT
import shlex

import nbexec
from nbexec.executor import prepare
from nbexec.schedulers.multinode import peer_command

plan = prepare("tiny.yaml", overrides=["launch.nnodes=2", "launch.rdzv_endpoint=10.0.0.5:29500"],
               run_name="ner-2nodes")
print(shlex.join(plan.argv[3:19]))
print(shlex.join(peer_command(plan, 1)))
"""),
    md("""
## Two nodes on this machine

Two agents on one machine stand in for two nodes: node 0 starts in the background
(its view updates in its cell), node 1 runs the command node 0 printed for it. They
train the reference model together: one process each, a world of 2, one MLflow run
(node 0's), one checkpoint (written by global rank 0, on node 0).
"""),
    code("""
import socket

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
node0 = %train tiny.yaml --background --nproc 1 --nnodes 2 --rdzv-endpoint 127.0.0.1:{port} --experiment scale-out
"""),
    code("""
from nbexec.cli import build_parser
from nbexec.options import prepare_from_args

argv = peer_command(node0.plan, 1)  # what node 0 printed for node 1
node1 = nbexec.launch(plan=prepare_from_args(build_parser().parse_args(argv[1:])))
r1, r0 = node1.result(), node0.result()
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print(r0.status, r1.status)
print(sorted(r0.log_paths), sorted(r1.log_paths))
print("checkpoint on node 0:", r0.checkpoint is not None, "| on node 1:", r1.checkpoint is not None)
print("MLflow run on node 0:", r0.mlflow_run_id is not None, "| on node 1:", r1.mlflow_run_id is not None)
"""),
    md("""
## Slurm

`--scheduler slurm` turns the plan into an sbatch job: one task per node starts that
node's `torchrun` agent under nbexec's runner, the first node hosts the rendezvous.
Nodes, GPUs and CPUs per node, time, partition and account come from `launch.slurm`.
The MLflow run is opened here and handed to the job through its environment; the
job's log files (on a file system the nodes share) stream into this cell while it runs;
interrupting the cell `scancel`s it. The dry run shows the script.
"""),
    code("%train tiny.yaml --dry-run --scheduler slurm --set launch.slurm.partition=gpu --set launch.slurm.time=30"),
    code("""
import shutil
import subprocess


def slurm_reachable() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10, check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


if slurm_reachable():
    job = nbexec.launch("tiny.yaml", overrides=["launch.scheduler=slurm"], output_dir="outputs")
    print(job)
    print(job.result(timeout=600))
else:
    print("no Slurm cluster reachable from here: the dry run above is what would be submitted")
"""),
    md("""
## AzureML (`pip install 'nbexec[azureml]'`)

`--scheduler azureml` builds an `azure.ai.ml` command job: the code folder, the command,
the environment, the compute cluster, `instance_count` = nodes and a PyTorch distribution
with `process_count_per_instance` = processes per node; the resolved config and the data
folder are its inputs. `--dry-run` writes the job YAML (`az ml job create -f` takes it).
"""),
    code("""
%train tiny.yaml --dry-run --scheduler azureml --nnodes 2 --run-name ner-azureml \\
    --set launch.azureml.compute=gpu-cluster --set launch.azureml.environment=azureml:nbexec-env:1
"""),
    code("""
# NBVAL_CHECK_OUTPUT
from azure.ai.ml import load_job

job = load_job("outputs/azureml/ner-azureml/job.yaml")
print(job.compute, job.resources.instance_count, job.distribution.type, job.distribution.process_count_per_instance)
print(job.command)
"""),
    md("""
Submitting needs the workspace and Azure credentials; without them nothing is submitted
and the error says what is missing. With them, `%train` submits through `MLClient` and the job
is followed like a local run: rank 0's output streams into the cell's view (`MLClient.jobs.stream`
in a helper process), its status and result come back as for a local run (metrics go to the
job's MLflow run in the workspace), and an interrupt or `run.cancel()` cancels the job.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
try:
    nbexec.launch("tiny.yaml", overrides=["launch.scheduler=azureml", "launch.azureml.compute=gpu-cluster"])
except nbexec.EnvironmentCheckError as err:
    print(err)
"""),
]


def main(argv: list[str]) -> int:
    path = write("05_scale_out.ipynb", SCALE_OUT)
    if "--no-run" not in argv:
        execute(path)
    print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
