"""What a Slurm job runs on each of its nodes (one task per node):

    python -m nbexec.schedulers.slurm.node RUN_DIR

It reads ``RUN_DIR/slurm/launch.json``, fills in the rendezvous host (the
allocation's first node), and runs that node's torchrun agent under nbexec's
own runner, exactly as a local launch: per-rank logs in ``logs/``, events,
error records, ``result.json``. The submitter streams those files. Node 0
uses ``RUN_DIR``; node R the sibling ``RUN_DIR.node<R>``. The job's
environment (exported by sbatch) already holds the parent -> child contract
and the MLflow run. Exits with the job's exit code, so Slurm's state matches.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import nbexec.contract as contract
from nbexec.schedulers.nodes import node_run_name
from nbexec.schedulers.slurm.scheduler import SLURM_HEAD, SLURM_IS_HOST
from nbexec.schedulers.slurm.script import HEAD_ENV, SPEC_FILE, slurm_dir

_RUN_DIR_VARS = (contract.ENV_RUN_DIR, contract.ENV_EVENTS, contract.ENV_CHECKPOINT_DIR)


def node_argv(argv: list[str], head: str, node_id: int) -> list[str]:
    """The spec's argv for this node: the head's address in, ``--local-addr`` only on node 0."""
    out = [a.replace(SLURM_HEAD, head).replace(SLURM_IS_HOST, "1" if node_id == 0 else "0") for a in argv]
    if node_id != 0 and "--local-addr" in out:
        at = out.index("--local-addr")
        del out[at : at + 2]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nbexec.schedulers.slurm.node RUN_DIR", file=sys.stderr)
        return 2
    import yaml

    from nbexec.config import load_config
    from nbexec.hardware import detect_hardware
    from nbexec.plan import LaunchPlan
    from nbexec.redact import merge_secrets
    from nbexec.runner.handle import TrainingRun

    run_dir = Path(argv[0])
    spec = json.loads((slurm_dir(run_dir) / SPEC_FILE).read_text())
    node_id = int(os.environ.get("SLURM_NODEID", "0"))
    head = os.environ.get(HEAD_ENV) or "127.0.0.1"
    env = dict(os.environ)
    raw = yaml.safe_load((run_dir / contract.CONFIG_FILE).read_text()) or {}
    secrets = env.get(contract.ENV_CONFIG_SECRETS)
    config = load_config(merge_secrets(raw, json.loads(secrets)) if secrets else raw)
    name = node_run_name(spec["run_name"], node_id)
    node_dir = run_dir.with_name(name)
    if node_id != 0:  # each node keeps its own run dir (logs, events of its ranks)
        for var in _RUN_DIR_VARS:
            if var in env:
                env[var] = env[var].replace(str(run_dir), str(node_dir), 1)
        (node_dir / contract.LOG_DIR).mkdir(parents=True, exist_ok=True)
    plan = LaunchPlan(
        config=config, run_name=name, run_dir=node_dir, nproc=int(spec["nproc"]), backend=spec["backend"],
        argv=tuple(node_argv(list(spec["argv"]), head, node_id)), env=env, env_set={},
        hardware=detect_hardware(env),
    )
    run = TrainingRun(plan, sinks=(), finalizers=())
    # scancel sends SIGTERM: stop the whole torchrun tree before Slurm's SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: run.cancel(grace=2.0))
    run.start(write_inputs=False)  # the submitter wrote them (node 0's run dir) or none are needed
    status = run.wait()
    result = run.outcome
    code = result.exit_code if result is not None and result.exit_code is not None else 1
    print(f"nbexec: node {node_id} {status.value} (exit {code})", file=sys.stderr, flush=True)
    if code < 0:
        return 128 - code
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
