"""Multi-node torchrun for real: two agents on this machine (nnodes=2, one process each).

Node 0 is launched through nbexec; node 1 runs the exact command node 0
prints for it (parsed by the CLI's own parser), as a person would on a
second machine. They meet at node 0's c10d rendezvous on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from pathlib import Path

import pytest

from nbexec.cli import build_parser
from nbexec.executor import launch, prepare
from nbexec.options import prepare_from_args, split_script_args
from nbexec.result import RunStatus
from nbexec.schedulers import get_scheduler
from nbexec.schedulers.multinode import peer_command

pytestmark = pytest.mark.slow
TINY = {
    "model": {"backbone": "tiny-encoder", "d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 320, "num_val": 64, "seq_len": 16},
}


@pytest.fixture
def scripts_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "fixtures" / "scripts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_agents_train_the_reference_model_together(tmp_path: Path) -> None:
    from nbexec.tracking.store import get_client

    endpoint = f"127.0.0.1:{_free_port()}"
    experiment = f"multinode-{tmp_path.name}"
    config = {
        **TINY,
        "data": {**TINY["data"], "path": str(tmp_path / "data")},
        # LOGLEVEL=INFO: each torchrun agent logs the rendezvous outcome (world size);
        # TORCH_CPP_LOG_LEVEL=INFO: each rank logs its DDP reducer (rank 1 prints nothing else)
        "launch": {"nproc": 1, "backend": "gloo", "nnodes": 2, "rdzv_endpoint": endpoint,
                   "env": {"LOGLEVEL": "INFO", "TORCH_CPP_LOG_LEVEL": "INFO"}},
        "output": {"dir": str(tmp_path / "runs")},
        "tracking": {"experiment": experiment},
    }
    plan0 = prepare(config)
    assert "--rdzv-conf" in plan0.argv and "is_host=1" in plan0.argv
    node0 = launch(plan=plan0)
    try:
        # node 1 runs what node 0 prints for it
        printed = shlex.join(peer_command(plan0, 1))
        assert printed in get_scheduler(plan0.config).dry_run(plan0).text  # what --dry-run shows
        argv = shlex.split(printed)
        assert argv[:2] == ["nbexec", "train"]
        options, script_args = split_script_args(argv[1:])
        args = build_parser().parse_args(options)
        plan1 = prepare_from_args(args, script_args)
        assert plan1.run_dir == plan0.run_dir.with_name(plan0.run_name + ".node1")
        assert "is_host=0" in plan1.argv and "--local-addr" not in plan1.argv
        node1 = launch(plan=plan1)
        try:
            result1 = node1.result(timeout=180)
        finally:
            node1.cancel()
        result0 = node0.result(timeout=180)
    finally:
        node0.cancel()

    assert result0.status is RunStatus.FINISHED and result1.status is RunStatus.FINISHED
    # global rank 0 on node 0 (its --local-addr sorts first), rank 1 on node 1
    assert "rank0" in result0.log_paths and "rank1" not in result0.log_paths
    assert "rank1" in result1.log_paths and "rank0" not in result1.log_paths
    assert "2 process(es)" in result0.log_paths["rank0"].read_text()  # the trainer's world size
    rank1_log = result1.log_paths["rank1"].read_text()
    assert "[rank1]:" in rank1_log and "Reducer" in rank1_log  # rank 1 ran DDP, on node 1
    assert "rank 0 of world size 2" in result0.log_paths["rank0"].read_text()  # both ranks' logs say it
    assert "rank 1 of world size 2" in rank1_log
    for result in (result0, result1):  # each agent saw a world of 2
        launcher = result.log_paths["launcher"].read_text()
        assert "global_world_sizes=[2]" in launcher, launcher[-2000:]
    # the checkpoint is written once, by global rank 0, on node 0
    assert result0.checkpoint is not None and result1.checkpoint is None
    assert not (plan1.run_dir / "checkpoint").exists()
    state = json.loads((result0.checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    # one MLflow run, opened by node 0, with rank 0's metrics
    assert result0.mlflow_run_id is not None and result1.mlflow_run_id is None
    client = get_client(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [result0.mlflow_run_id]
    assert runs[0].info.status == "FINISHED" and runs[0].data.metrics["val_loss"] > 0


def test_a_rank_failing_on_node1_is_the_root_cause_on_both_nodes(tmp_path: Path, scripts_dir: Path) -> None:
    from nbexec.errors import TrainingFailed

    config = {
        "launch": {"entrypoint": str(scripts_dir / "fail_rank1.py"), "nproc": 1, "backend": "gloo",
                   "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{_free_port()}"},
        "output": {"dir": str(tmp_path / "runs"), "run_name": "boom"},
        "tracking": {"enabled": False},
    }
    node0 = launch(config)
    try:
        peer = peer_command(node0.plan, 1)
        args = build_parser().parse_args(peer[1:])
        node1 = launch(plan=prepare_from_args(args))
        errors = []
        for node in (node1, node0):
            with pytest.raises(TrainingFailed) as caught:
                node.result(timeout=180)
            errors.append(caught.value)
    finally:
        node0.cancel()
    for error in errors:  # node 0's rank failed too (its peer vanished): a consequence, not the cause
        assert error.root_cause.rank == 1 and error.root_cause.exc_type == "ValueError"
        assert "rank one exploded on batch 17" in error.root_cause.message
