"""Tests for nbexec.plan: the whole torchrun argv, nproc/backend, child env, secrets, run names.

Machines are simulated with the ``machine`` fixture (tests/conftest.py), so the
plans do not depend on the host's CPUs or GPUs. Nothing here spawns torchrun.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nbexec import contract
from nbexec.child import load_run_config
from nbexec.config import BUILTIN_TRAINER_MODULE, TrainingConfig, load_config
from nbexec.executor import prepare
from nbexec.hardware import HardwareInfo
from nbexec.plan import (
    BOOTSTRAP_MODULE,
    build_training_command,
    make_run_name,
    plan_training,
    resolve_backend,
    resolve_nproc,
    setup_training_environment,
    should_use_ddp,
)
from nbexec.redact import REDACTED
from nbexec.runner.handle import write_run_inputs

Machine = Callable[..., HardwareInfo]

# Script arguments that a shell, torchrun or a YAML re-parse would each mangle.
TRICKY_ARGS = [
    "--lr", "3e-5",
    "--nproc-per-node", "8",
    "-m", "os",
    "--",
    "two words",
    "; rm -rf ~",
    "$(id)",
    "`id`",
    "a|b > c && d",
    "'quoted'",
    '"double"',
    "key: value",
    "[1, 2]",
    "null",
    "",
]
SECRET = "hf_s3cr3t_value_do_not_print"
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def torchrun_prefix(nproc: int, run_name: str, *, max_restarts: int = 0, python: str = sys.executable) -> list[str]:
    return [
        python, "-m", "torch.distributed.run",
        "--nnodes", "1",
        "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "127.0.0.1:0",
        "--rdzv-id", run_name,
        "--max-restarts", str(max_restarts),
        "-m", BOOTSTRAP_MODULE,
    ]


# --- build_training_command: the whole argv ---------------------------------------------


def test_script_with_args_whole_argv() -> None:
    config = load_config({"launch": {"entrypoint": "scripts/train.py", "args": TRICKY_ARGS}})

    argv = build_training_command(config, nproc=2, run_name="run-1")

    assert argv == [*torchrun_prefix(2, "run-1"), "scripts/train.py", *TRICKY_ARGS]


def test_numbers_in_args_become_strings() -> None:
    config = load_config({"launch": {"entrypoint": "t.py", "args": ["--epochs", 3, 1.5]}})

    argv = build_training_command(config, nproc=1, run_name="r")

    assert argv == [*torchrun_prefix(1, "r"), "t.py", "--epochs", "3", "1.5"]


def test_module_whole_argv() -> None:
    config = load_config({"launch": {"module": "mypkg.train", "args": ["--x", "$(id)"], "max_restarts": 3}})

    argv = build_training_command(config, nproc=4, run_name="mod-run", python="/opt/py/bin/python3")

    assert argv == [
        *torchrun_prefix(4, "mod-run", max_restarts=3, python="/opt/py/bin/python3"),
        "-m", "mypkg.train", "--x", "$(id)",
    ]


def test_builtin_trainer_whole_argv() -> None:
    argv = build_training_command(load_config(None), nproc=2, run_name="builtin")

    assert argv == [*torchrun_prefix(2, "builtin"), "-m", BUILTIN_TRAINER_MODULE]


def test_rendezvous_lets_the_os_pick_a_free_port() -> None:
    argv = build_training_command(load_config(None), nproc=2, run_name="x")

    assert argv[argv.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"
    assert argv[argv.index("--rdzv-backend") + 1] == "c10d"


def test_plan_argv_is_the_built_command(machine: Machine, tmp_path: Path) -> None:
    config = load_config({"launch": {"entrypoint": "t.py", "args": TRICKY_ARGS}})

    plan = plan_training(config, output_dir=tmp_path, hardware=machine(cpus=2))

    assert plan.argv == tuple(build_training_command(config, nproc=2, run_name=plan.run_name))


def test_script_args_reach_argv_verbatim_through_prepare(machine: Machine, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")

    plan = prepare(
        entrypoint=script, script_args=TRICKY_ARGS, nproc=1,
        output_dir=tmp_path / "out", hardware=machine(cpus=2),
    )

    assert list(plan.argv) == [*torchrun_prefix(1, plan.run_name), str(script), *TRICKY_ARGS]
    assert not (tmp_path / "out").exists()


# --- nproc and backend ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "gpus", "expected"),
    [(1, 0, 1), (2, 0, 2), (16, 0, 2), (2, 1, 1), (2, 4, 4), (64, 8, 8)],
)
def test_auto_nproc(machine: Machine, cpus: int, gpus: int, expected: int) -> None:
    assert resolve_nproc(load_config(None), machine(cpus=cpus, gpus=gpus)) == expected


@pytest.mark.parametrize(("nproc", "gpus"), [(1, 0), (3, 0), (3, 4), (7, 4)])
def test_explicit_nproc_is_kept(machine: Machine, nproc: int, gpus: int) -> None:
    config = load_config({"launch": {"nproc": nproc}})

    assert resolve_nproc(config, machine(cpus=2, gpus=gpus)) == nproc


def test_auto_nproc_with_gloo_forced_on_a_gpu_machine_uses_cpus(machine: Machine) -> None:
    config = load_config({"launch": {"backend": "gloo"}})

    assert resolve_nproc(config, machine(cpus=16, gpus=4)) == 2


@pytest.mark.parametrize(
    ("backend", "gpus", "expected"),
    [("auto", 0, "gloo"), ("auto", 1, "nccl"), ("auto", 4, "nccl"), ("gloo", 4, "gloo"), ("nccl", 0, "nccl")],
)
def test_backend(machine: Machine, backend: str, gpus: int, expected: str) -> None:
    config = load_config({"launch": {"backend": backend}})

    assert resolve_backend(config, machine(cpus=4, gpus=gpus)) == expected
    plan = plan_training(config, output_dir="/nonexistent-out", hardware=machine(cpus=4, gpus=gpus))
    assert plan.backend == expected


def test_plan_on_four_gpus(machine: Machine, tmp_path: Path) -> None:
    plan = plan_training(load_config(None), output_dir=tmp_path, hardware=machine(cpus=32, gpus=4))

    assert (plan.nproc, plan.backend) == (4, "nccl")
    assert plan.env[contract.ENV_BACKEND] == "nccl"
    assert plan.argv[plan.argv.index("--nproc-per-node") + 1] == "4"


@pytest.mark.parametrize(
    ("config", "cpus", "gpus", "expected"),
    [
        (None, 1, 0, False),
        (None, 2, 0, True),
        (None, 8, 1, False),
        (None, 8, 4, True),
        ({"launch": {"nproc": 1}}, 8, 4, False),
        ({"launch": {"nproc": 3}}, 1, 0, True),
    ],
)
def test_should_use_ddp(machine: Machine, config: dict | None, cpus: int, gpus: int, expected: bool) -> None:
    hardware = machine(cpus=cpus, gpus=gpus)

    assert should_use_ddp(config, hardware) is expected
    assert should_use_ddp(load_config(config), hardware) is expected


# --- setup_training_environment -----------------------------------------------------------


def child_env(
    config: TrainingConfig | None = None,
    *,
    base: dict[str, str] | None = None,
    nproc: int = 2,
    cpus: int = 2,
    machine: Machine,
    run_dir: Path = Path("/runs/r1"),
    resume_from: Path | None = None,
) -> dict[str, str]:
    return setup_training_environment(
        config or load_config(None), run_dir, nproc=nproc, backend="gloo", run_name="r1",
        base_env={"PATH": "/usr/bin"} if base is None else base, hardware=machine(cpus=cpus),
        resume_from=resume_from,
    )


def test_environment_whole(machine: Machine) -> None:
    env = child_env(base={"PATH": "/usr/bin", "HOME": "/home/u", "CUDA_VISIBLE_DEVICES": "1,3"},
                    nproc=2, cpus=8, machine=machine)

    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "CUDA_VISIBLE_DEVICES": "1,3",
        "NBEXEC_RUN_DIR": "/runs/r1",
        "NBEXEC_RUN_NAME": "r1",
        "NBEXEC_CONFIG": "/runs/r1/config.yaml",
        "NBEXEC_EVENTS": "/runs/r1/events.jsonl",
        "NBEXEC_CHECKPOINT_DIR": "/runs/r1/checkpoint",
        "NBEXEC_BACKEND": "gloo",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "4",
        "NBEXEC_PROGRESS_ALL_RANKS": "1",  # launch.stall_timeout is on by default: ranks report their steps
    }


def test_hang_settings_reach_the_ranks_environment(machine: Machine) -> None:
    watched = child_env(load_config({"launch": {"collective_timeout": 90, "stall_timeout": 60}}), machine=machine)
    unwatched = child_env(load_config({"launch": {"stall_timeout": 0}}), machine=machine)

    assert watched["NBEXEC_COLLECTIVE_TIMEOUT"] == "90" and watched["NBEXEC_PROGRESS_ALL_RANKS"] == "1"
    assert "NBEXEC_COLLECTIVE_TIMEOUT" not in unwatched and "NBEXEC_PROGRESS_ALL_RANKS" not in unwatched


@pytest.mark.parametrize(("cpus", "nproc", "expected"), [(16, 4, "4"), (8, 3, "2"), (2, 2, "1"), (2, 4, "1"), (1, 1, "1")])
def test_omp_threads_share_the_cores(machine: Machine, cpus: int, nproc: int, expected: str) -> None:
    assert child_env(nproc=nproc, cpus=cpus, machine=machine)["OMP_NUM_THREADS"] == expected


def test_users_omp_threads_are_kept(machine: Machine) -> None:
    env = child_env(base={"OMP_NUM_THREADS": "7"}, nproc=2, cpus=16, machine=machine)

    assert env["OMP_NUM_THREADS"] == "7"


def test_config_omp_threads_win(machine: Machine) -> None:
    config = load_config({"launch": {"omp_num_threads": 3}})

    env = child_env(config, base={"OMP_NUM_THREADS": "7"}, nproc=2, cpus=16, machine=machine)

    assert env["OMP_NUM_THREADS"] == "3"


STALE = {
    "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
    "ROLE_RANK": "3", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "old", "TORCHELASTIC_ERROR_FILE": "/tmp/old.json",
    "NBEXEC_RUN_DIR": "/old/run", "NBEXEC_RUN_NAME": "old", "NBEXEC_RESUME_FROM": "/old/ckpt",
    "NBEXEC_CONFIG_SECRETS": '{"training.hf_token": "old"}', "NBEXEC_LOG_SOCKET": "/old/sock",
    "NBEXEC_EVENTS_ALL_RANKS": "1",
}


def test_stale_inherited_variables_are_removed(machine: Machine) -> None:
    base = {"PATH": "/usr/bin", "MY_VAR": "kept", **STALE}

    env = child_env(base=base, machine=machine)

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_ERROR_FILE",
                 "NBEXEC_RESUME_FROM", "NBEXEC_CONFIG_SECRETS", "NBEXEC_LOG_SOCKET", "NBEXEC_EVENTS_ALL_RANKS"):
        assert name not in env, name
    assert env["NBEXEC_RUN_DIR"] == "/runs/r1"
    assert env["NBEXEC_RUN_NAME"] == "r1"
    assert env["MY_VAR"] == "kept"


def test_stale_variables_from_os_environ_are_removed(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in STALE.items():
        monkeypatch.setenv(name, value)

    env = setup_training_environment(
        load_config(None), Path("/runs/r1"), nproc=2, backend="gloo", run_name="r1", hardware=machine(),
    )

    leftover = {name for name in STALE if env.get(name) == STALE[name]}
    assert leftover == set()
    assert env["PATH"] == os.environ["PATH"]


def test_launch_env_is_applied_last(machine: Machine) -> None:
    config = load_config({"launch": {"omp_num_threads": 2, "env": {
        "OMP_NUM_THREADS": 5, "PYTHONUNBUFFERED": "0", "NCCL_DEBUG": "INFO", "FLAG": True, "PATH": "/custom",
    }}})

    env = child_env(config, base={"PATH": "/usr/bin", "OMP_NUM_THREADS": "7"}, machine=machine)

    assert env["OMP_NUM_THREADS"] == "5"
    assert env["PYTHONUNBUFFERED"] == "0"
    assert env["NCCL_DEBUG"] == "INFO"
    assert env["FLAG"] == "true"
    assert env["PATH"] == "/custom"


def test_base_env_is_not_mutated(machine: Machine) -> None:
    base = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "7", **STALE}
    before = copy.deepcopy(base)
    config = load_config({"training": {"hf_token": SECRET}, "launch": {"env": {"A": "1"}}})

    child_env(config, base=base, machine=machine)
    plan_training(config, output_dir="/nonexistent-out", hardware=machine(), base_env=base)

    assert base == before


def test_resume_from_is_passed_on(machine: Machine) -> None:
    env = child_env(machine=machine, resume_from=Path("/runs/old/checkpoint"))

    assert env[contract.ENV_RESUME_FROM] == "/runs/old/checkpoint"


# --- the recorded plan: secrets, describe --------------------------------------------------


@pytest.fixture
def secret_plan(machine: Machine, tmp_path: Path):
    config = load_config({
        "training": {"hf_token": SECRET, "epochs": 1},
        "launch": {"env": {"WANDB_API_KEY": "wandb-secret-123", "NCCL_DEBUG": "WARN"}},
    })
    base = {"PATH": "/usr/bin", "HOME": "/home/u", "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-456",
            "CUDA_VISIBLE_DEVICES": "0", "UNRELATED": "x"}
    return plan_training(config, output_dir=tmp_path / "out", hardware=machine(cpus=2), base_env=base)


def test_config_secret_goes_to_the_child_env_only(secret_plan) -> None:
    plan = secret_plan

    assert json.loads(plan.env[contract.ENV_CONFIG_SECRETS]) == {
        "training.hf_token": SECRET,
        "launch.env.WANDB_API_KEY": "wandb-secret-123",
    }
    assert plan.env["WANDB_API_KEY"] == "wandb-secret-123"
    assert plan.env["MLFLOW_TRACKING_PASSWORD"] == "mlflow-pass-456"
    recorded = plan.recorded_env()
    text = plan.describe()
    for secret in (SECRET, "wandb-secret-123", "mlflow-pass-456"):
        assert secret not in json.dumps(recorded)
        assert secret not in text
    assert recorded[contract.ENV_CONFIG_SECRETS] == REDACTED
    assert recorded["WANDB_API_KEY"] == REDACTED
    assert recorded["MLFLOW_TRACKING_PASSWORD"] == REDACTED


def test_recorded_env_holds_what_changes_the_run(secret_plan) -> None:
    recorded = secret_plan.recorded_env()

    assert recorded["CUDA_VISIBLE_DEVICES"] == "0"
    assert recorded["NCCL_DEBUG"] == "WARN"
    assert recorded["NBEXEC_RUN_DIR"] == str(secret_plan.run_dir)
    assert recorded["PYTHONUNBUFFERED"] == "1"
    assert "UNRELATED" not in recorded and "HOME" not in recorded and "PATH" not in recorded


def test_child_reads_the_secret_back_and_files_hold_none(
    secret_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = secret_plan
    write_run_inputs(plan)
    for name in (contract.ENV_CONFIG, contract.ENV_CONFIG_SECRETS):
        monkeypatch.setenv(name, plan.env[name])

    child_config = load_run_config()

    assert child_config["training"]["hf_token"] == SECRET
    assert child_config["launch"]["env"]["WANDB_API_KEY"] == "wandb-secret-123"
    for path in plan.run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert SECRET not in text and "wandb-secret-123" not in text and "mlflow-pass-456" not in text, path


def test_plan_repr_holds_no_secret(secret_plan) -> None:
    assert SECRET not in repr(secret_plan)


def test_describe_shows_the_whole_plan(secret_plan) -> None:
    plan = secret_plan
    lines = plan.describe().splitlines()

    command = lines[lines.index("command:") + 1].strip()
    assert shlex.split(command) == list(plan.argv)
    assert f"run name:   {plan.run_name}" in lines
    assert f"run dir:    {plan.run_dir}" in lines
    assert "processes:  2 (gloo)" in lines
    assert f"config:     {plan.config.config_hash}" in lines
    env_lines = lines[lines.index("environment:") + 1:]
    assert env_lines == [f"  {k}={v}" for k, v in plan.recorded_env().items()]


def test_plan_env_set_is_what_nbexec_added(secret_plan) -> None:
    plan = secret_plan

    assert set(plan.env_set) == {
        "NBEXEC_RUN_DIR", "NBEXEC_RUN_NAME", "NBEXEC_CONFIG", "NBEXEC_EVENTS", "NBEXEC_CHECKPOINT_DIR",
        "NBEXEC_BACKEND", "NBEXEC_CONFIG_SECRETS", "PYTHONUNBUFFERED", "OMP_NUM_THREADS",
        "NBEXEC_PROGRESS_ALL_RANKS", "WANDB_API_KEY", "NCCL_DEBUG",
    }


# --- run names and run dirs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "what"),
    [
        ({}, "tiny-encoder"),
        ({"entrypoint": "scripts/my train.py"}, "my-train"),
        ({"entrypoint": "../../-x;$(id).py"}, "x-id"),
        ({"module": "mypkg.fine_tune"}, "fine_tune"),
    ],
)
def test_generated_run_name(launch: dict, what: str) -> None:
    now = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
    config = load_config({"launch": launch})

    name = make_run_name(config, now=now)

    # the time first: MLflow's runs list cuts names at ~22 characters
    assert re.fullmatch(r"20260304-050607-" + re.escape(what) + r"-[0-9a-f]{6}", name), name
    assert RUN_NAME_RE.match(name)
    assert load_config({"output": {"run_name": name}}).output.run_name == name  # the config accepts it back


def test_generated_run_name_from_non_ascii_script_is_valid() -> None:
    name = make_run_name(load_config({"launch": {"entrypoint": "modèle_entraînement.py"}}))

    assert RUN_NAME_RE.match(name), name


def test_configured_run_name_is_used() -> None:
    assert make_run_name(load_config({"output": {"run_name": "fixed-1"}})) == "fixed-1"


def test_generated_run_names_are_unique_within_one_second() -> None:
    config = load_config(None)
    now = time.time()

    names = {make_run_name(config, now=now) for _ in range(20)}

    assert len(names) == 20


def test_two_plans_of_one_config_get_their_own_run_dir(machine: Machine, tmp_path: Path) -> None:
    config = load_config({"training": {"epochs": 1}})

    first = plan_training(config, output_dir=tmp_path, hardware=machine())
    second = plan_training(config, output_dir=tmp_path, hardware=machine())

    assert first.run_dir != second.run_dir
    assert first.run_dir.parent == second.run_dir.parent == tmp_path
    assert first.config.config_hash == second.config.config_hash
    differ = [i for i, (a, b) in enumerate(zip(first.argv, second.argv)) if a != b]
    assert [first.argv[i - 1] for i in differ] == ["--rdzv-id"]


def test_relative_output_dir_becomes_absolute(machine: Machine, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config({"output": {"dir": "runs", "run_name": "r1"}})

    plan = plan_training(config, hardware=machine())

    assert plan.run_dir == tmp_path / "runs" / "r1"
    assert plan.env[contract.ENV_RUN_DIR] == str(tmp_path / "runs" / "r1")


def test_planning_creates_nothing(machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    plan_training(load_config(None), hardware=machine())
    plan_training(load_config(None), output_dir=tmp_path / "out", hardware=machine())

    assert list(tmp_path.iterdir()) == []


# --- the CLI's dry run --------------------------------------------------------------------


def test_cli_dry_run_prints_the_whole_command_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    script_args = ["--lr", "3e-5", "two words", ";rm -rf ~", "$(id)"]

    proc = subprocess.run(
        [sys.executable, "-m", "nbexec", "train", "--dry-run", "--nproc", "1", "--output", "out",
         "--entrypoint", "train.py", "--", *script_args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    run_name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("run name:"))
    assert RUN_NAME_RE.match(run_name)
    command = shlex.split(lines[lines.index("command:") + 1])
    assert command == [*torchrun_prefix(1, run_name), "train.py", *script_args]
    assert f"run dir:    {tmp_path / 'out' / run_name}" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]


# --- config.yaml says what ran -------------------------------------------------------------


def _written_config(plan) -> tuple[str, dict]:
    write_run_inputs(plan)
    text = (plan.run_dir / contract.CONFIG_FILE).read_text()
    return text, yaml.safe_load(text)


def test_the_run_config_is_resolved_with_no_empty_section(machine: Machine, tmp_path: Path) -> None:
    """With no config at all, config.yaml holds the trainer's values and the resolved launch (issue: `model: {}`)."""
    plan = plan_training(load_config(None), output_dir=tmp_path, hardware=machine(cpus=4))

    text, written = _written_config(plan)

    assert [name for name, section in written.items() if not section] == []
    assert written["training"]["learning_rate"] == 0.002 and written["model"]["d_model"] == 64
    # the synthetic dataset's folder stays unset (null): run again with other data settings, it is made anew
    assert written["data"]["num_train"] >= 1 and written["data"]["path"] is None
    assert (written["launch"]["nproc"], written["launch"]["backend"]) == (plan.nproc, plan.backend) == (2, "gloo")
    assert "launch.nproc and launch.backend were auto" in text
    # read back, it trains the same model (the launch differs only in saying 2 x gloo for auto)
    again = load_config(plan.run_dir / contract.CONFIG_FILE).to_dict()
    assert {k: again[k] for k in ("model", "training", "data")} == {
        k: plan.config.to_dict()[k] for k in ("model", "training", "data")}


def test_an_own_scripts_config_holds_what_nbexec_knows(machine: Machine, tmp_path: Path) -> None:
    config = load_config({"launch": {"entrypoint": "train.py", "args": ["--epochs", "3", "--api-key", "k-123"]}})
    plan = plan_training(config, output_dir=tmp_path, hardware=machine(cpus=2))

    text, written = _written_config(plan)

    assert set(written) == {"launch", "output", "tracking", "backup"}  # no empty model/training/data
    assert written["launch"]["entrypoint"] == "train.py"
    assert written["launch"]["args"] == ["--epochs", "3", "--api-key", REDACTED]
    assert "k-123" not in text
