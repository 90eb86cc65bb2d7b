"""Multi-node plans (pure): torchrun argv per node, the printed peer commands, config rules."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from nbexec.cli import build_parser
from nbexec.config import load_config
from nbexec.errors import ConfigError
from nbexec.executor import prepare
from nbexec.options import config_overrides
from nbexec.plan import plan_training
from nbexec.schedulers import get_scheduler
from nbexec.schedulers.multinode import peer_command

TWO = {"launch": {"nproc": 2, "nnodes": 2, "rdzv_endpoint": "10.0.0.5:29500"}, "output": {"run_name": "job"}}


def _plan(raw: dict, machine, tmp_path: Path):
    return plan_training(load_config(raw), output_dir=tmp_path, hardware=machine(cpus=4), base_env={})


def test_node0_hosts_the_rendezvous_and_sorts_first(machine, tmp_path: Path) -> None:
    plan = _plan(TWO, machine, tmp_path)
    assert list(plan.argv) == [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "10.0.0.5:29500", "--rdzv-id", "job",
        "--rdzv-conf", "is_host=1", "--local-addr", "10.0.0.5",
        "--max-restarts", "0",
        "-m", "nbexec.child.bootstrap", "-m", "nbexec.trainers.token_classification",
    ]


def test_other_nodes_join_with_the_same_id(machine, tmp_path: Path) -> None:
    raw = {"launch": {**TWO["launch"], "node_rank": 1, "rdzv_id": "job", "max_restarts": 3, "nnodes": "1:4"},
           "output": {"run_name": "job.node1"}}
    plan = _plan(raw, machine, tmp_path)
    assert list(plan.argv[3:19]) == [
        "--nnodes", "1:4", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "10.0.0.5:29500", "--rdzv-id", "job",
        "--rdzv-conf", "is_host=0", "--max-restarts", "3", "-m", "nbexec.child.bootstrap",
    ]


def test_peer_command_is_what_node0_prints_and_parses_back(machine, tmp_path: Path) -> None:
    plan = _plan(TWO, machine, tmp_path)
    argv = peer_command(plan, 1)
    assert argv == [
        "nbexec", "train", str(tmp_path / "job" / "config.yaml"), "--nproc", "2", "--nnodes", "2",
        "--node-rank", "1", "--rdzv-endpoint", "10.0.0.5:29500", "--rdzv-id", "job",
        "--output", str(tmp_path), "--run-name", "job.node1",
    ]
    text = get_scheduler(plan.config).dry_run(plan).text  # what --dry-run shows
    assert f"node 1: {shlex.join(argv)}" in text and "this is node 0" in text
    args = build_parser().parse_args(argv[1:])
    assert config_overrides(args) == ['launch.nnodes="2"', "launch.node_rank=1",
                                      'launch.rdzv_endpoint="10.0.0.5:29500"', 'launch.rdzv_id="job"']


def test_config_hash_is_the_same_on_every_node_and_single_node_hashes_unchanged() -> None:
    node0 = load_config(TWO)
    node1 = load_config({"launch": {**TWO["launch"], "node_rank": 1, "rdzv_id": "x"}})
    assert node0.config_hash == node1.config_hash
    single = load_config({"launch": {"nproc": 2}})
    assert single.config_hash != node0.config_hash  # more nodes: another world size
    assert single.config_hash == load_config({"launch": {"nproc": 2, "scheduler": "slurm"}}).config_hash


@pytest.mark.parametrize(("launch", "words"), [
    ({"nnodes": 0}, ("launch.nnodes = 0", '"MIN:MAX"')),
    ({"nnodes": "4:2"}, ("launch.nnodes = '4:2'",)),
    ({"nnodes": "two"}, ("launch.nnodes = 'two'",)),
    ({"nnodes": 2}, ("launch.rdzv_endpoint", "HOST:PORT of node 0")),
    ({"nnodes": 2, "rdzv_endpoint": "10.0.0.5"}, ("launch.rdzv_endpoint = '10.0.0.5'", "HOST:PORT")),
    ({"nnodes": 2, "rdzv_endpoint": "h:70000"}, ("port 1-65535",)),
    ({"nnodes": 2, "rdzv_endpoint": "h:1", "node_rank": 2}, ("launch.node_rank = 2", "from 0 to 1")),
    ({"nnodes": 2, "rdzv_endpoint": "h:1", "node_rank": 1}, ("launch.rdzv_id", "--rdzv-id")),
    ({"scheduler": "slurm", "node_rank": 1, "nnodes": 2}, ("places the nodes itself",)),
    ({"scheduler": "kubernetes"}, ("allowed: local, slurm, azureml",)),
    ({"slurm": {"partiton": "gpu"}}, ("launch.slurm.partiton", "did you mean 'partition'")),
    ({"slurm": {"time": "an hour"}}, ("launch.slurm.time", "HH:MM:SS")),
    ({"slurm": {"partition": "gpu; rm -rf /"}}, ("launch.slurm.partition",)),
    ({"slurm": {"extra_args": "--qos=high"}}, ("launch.slurm.extra_args", "one item each")),
    ({"azureml": {"compute": ""}}, ("launch.azureml.compute",)),
])
def test_bad_scale_out_keys_name_the_field_and_the_fix(launch: dict, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:  # the config refuses its keys, prepare() the schedulers' options
        prepare({"launch": launch})
    for word in words:
        assert word in str(caught.value)
