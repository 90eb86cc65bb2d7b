"""The job side of a multi-node Slurm job without Slurm: two node programs started as
``srun`` would start them (SLURM_NODEID 0 and 1, the head's address exported by the
batch script) train the reference model together; the submitter's file pump sees
both nodes' ranks. And Slurm's own failure states as root causes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nbexec.executor import prepare
from nbexec.result import RunStatus
from nbexec.runner.handle import write_run_inputs
from nbexec.runner.sinks import Dispatcher
from nbexec.schedulers.filetail import FileTailPump
from nbexec.schedulers.nodes import node_run_dirs
from nbexec.schedulers.slurm.commands import JobState
from nbexec.schedulers.slurm.script import SPEC_FILE, slurm_dir, spec_json
from nbexec.schedulers.slurm.submit import SlurmJob

TINY = {
    "model": {"backbone": "tiny-encoder", "d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 320, "num_val": 64, "seq_len": 16},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_node_programs_train_together_as_srun_starts_them(tmp_path: Path) -> None:
    config = {**TINY, "data": {**TINY["data"], "path": str(tmp_path / "data")},
              "launch": {"nproc": 1, "nnodes": 2, "scheduler": "slurm", "backend": "gloo",
                         "slurm": {"rdzv_port": _free_port(), "cpus_per_task": 1}},
              "output": {"dir": str(tmp_path / "runs"), "run_name": "two"}, "tracking": {"enabled": False}}
    plan = prepare(config)
    write_run_inputs(plan)  # what the submitter writes before sbatch
    slurm_dir(plan.run_dir).mkdir()
    (slurm_dir(plan.run_dir) / SPEC_FILE).write_text(spec_json(plan))
    nodes = [
        subprocess.Popen([sys.executable, "-m", "nbexec.schedulers.slurm.node", str(plan.run_dir)],
                         env={**plan.env, "SLURM_NODEID": str(i), "NBEXEC_SLURM_HEAD": "127.0.0.1"},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=180)[0].decode(errors="replace") for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs

    node1_dir = plan.run_dir.with_name("two.node1")
    assert node_run_dirs(plan.run_dir) == [plan.run_dir, node1_dir]
    assert "2 process(es)" in (plan.run_dir / "logs" / "rank0.log").read_text()
    assert (node1_dir / "logs" / "rank1.log").exists() and not (node1_dir / "checkpoint").exists()
    state = json.loads((plan.run_dir / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    for run_dir in (plan.run_dir, node1_dir):
        assert json.loads((run_dir / "result.json").read_text())["status"] == "FINISHED"

    # the submitter's pump reads both nodes' logs
    pump = FileTailPump(plan.run_dir, Dispatcher([]), on_events=lambda events: None,
                        dirs=lambda: node_run_dirs(plan.run_dir))
    pump.run(lambda: True)
    assert pump.ranks_seen == {0, 1}
    assert any("training finished" in ln.text for ln in pump.lines(0))
    assert set(pump.log_paths()) == {"rank0", "rank1", "launcher"}


def test_slurm_failure_states_are_the_root_cause(tmp_path: Path) -> None:
    plan = prepare({"launch": {"nproc": 1, "scheduler": "slurm", "slurm": {"time": "5"}},
                    "output": {"dir": str(tmp_path)}, "tracking": {"enabled": False}})
    (plan.run_dir / "logs").mkdir(parents=True)
    job = SlurmJob("42", {}, plan.run_dir)
    job.final = JobState("TIMEOUT", 0, 15, "TimeLimit")
    status, cause = job.outcome(-15, cancelled=False)
    assert status is RunStatus.FAILED and cause is not None
    assert cause.message == ("Slurm job 42 TIMEOUT: the job hit its time limit (launch.slurm.time) (TimeLimit)")
    job.final = JobState("FAILED", 1, 0, "NonZeroExitCode")  # no error record from any rank
    status, cause = job.outcome(1, cancelled=False)
    assert cause is not None and f"see {plan.run_dir}/slurm/slurm-42.out" in cause.message
    job.final = JobState("CANCELLED", 0, 15, "")  # scancel by someone else: still KILLED
    assert job.outcome(-15, cancelled=False) == (RunStatus.KILLED, None)
