"""launch.slurm as SlurmOptions: typed, checked with the field, the value and the fix, refused before launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbexec.config import load_config
from nbexec.errors import ConfigError
from nbexec.executor import prepare
from nbexec.schedulers.slurm.options import SlurmOptions, slurm_options


def test_options_are_typed_values() -> None:
    config = load_config({"launch": {"scheduler": "slurm", "slurm": {
        "partition": 123, "time": "1-00:00:00", "gpus_per_node": 4, "cpus_per_task": None,
        "extra_args": ["--exclusive"], "rdzv_port": 29600}}})
    assert slurm_options(config) == SlurmOptions(partition="123", time="1-00:00:00", gpus_per_node=4,
                                                 extra_args=("--exclusive",), rdzv_port=29600)
    assert SlurmOptions.from_config(None) == SlurmOptions.from_config({}) == SlurmOptions()
    assert dict(config.launch.slurm)["partition"] == 123  # the config keeps what was given; the options check it


@pytest.mark.parametrize(("raw", "message"), [
    ({"partiton": "gpu"}, "launch.slurm.partiton = 'gpu' is not allowed; unknown key (did you mean 'partition'?); "
                          "allowed: partition, account, qos, constraint, time, mem, cpus_per_task, gpus_per_node, "
                          "rdzv_port, extra_args"),
    ({"time": "an hour"}, "launch.slurm.time = 'an hour' is not allowed; use a Slurm time limit: "
                          '"MINUTES", "HH:MM:SS" or "D-HH:MM:SS"'),
    ({"partition": "gpu; rm -rf /"}, "launch.slurm.partition = 'gpu; rm -rf /' is not allowed; use a Slurm partition name"),
    ({"extra_args": "--qos=high"}, "launch.slurm.extra_args = '--qos=high' is not allowed; "
                                   'use a list of sbatch options, one item each: ["--qos=high"]'),
    ({"extra_args": ["--a", "b"]}, "launch.slurm.extra_args[1] = 'b' is not allowed; "
                                   'each item is one "--option=value" sbatch option'),
    ({"gpus_per_node": 65}, "launch.slurm.gpus_per_node = 65 is not allowed; use an integer between 0 and 64"),
    ({"cpus_per_task": True}, "launch.slurm.cpus_per_task = True is not allowed; use an integer >= 1"),
    ({"rdzv_port": 80}, "launch.slurm.rdzv_port = 80 is not allowed; use an integer between 1024 and 65535"),
    ({"mem": "32 GB"}, 'launch.slurm.mem = \'32 GB\' is not allowed; use a memory per node such as "32G"'),
])
def test_bad_options_say_the_field_the_value_and_what_is_allowed(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SlurmOptions.from_config(raw)
    assert str(caught.value) == message
    assert caught.value.field == message.split(" = ")[0]


def test_prepare_refuses_bad_options_before_anything_is_written(tmp_path: Path) -> None:
    raw = {"launch": {"scheduler": "slurm", "slurm": {"gpus_per_node": 65}}, "output": {"dir": str(tmp_path / "out")}}
    config = load_config(raw)  # the config alone does not know Slurm's keys
    with pytest.raises(ConfigError, match="launch.slurm.gpus_per_node = 65"):
        prepare(config)
    with pytest.raises(ConfigError, match="launch.slurm.time"):  # checked whichever scheduler runs, as always
        prepare({"launch": {"slurm": {"time": "soon"}}, "output": {"dir": str(tmp_path / "out")}})
    assert not (tmp_path / "out").exists()
