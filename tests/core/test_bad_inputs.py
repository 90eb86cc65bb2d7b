"""Bad configs, arguments and environments: the right error, a message that says the fix,
and nothing spawned or written.

Every case goes through ``nbexec.executor.launch`` (the one run path) on a
simulated 2-CPU machine without GPUs, in a working directory under tmp_path;
before and after, the test records the process's children and every file
under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from nbexec.config import load_config
from nbexec.errors import ConfigError, EnvironmentCheckError, NbexecError
from nbexec.executor import launch, prepare
from nbexec.hardware import HardwareInfo, detect_hardware
from nbexec.plan import plan_training

Machine = Callable[..., HardwareInfo]


@dataclass(frozen=True)
class Case:
    """One bad input: ``setup(cwd)`` returns (config, launch options); what must be raised."""

    setup: Callable[[Path], tuple[Any, dict[str, Any]]]
    error: type[NbexecError]
    says: tuple[str, ...]
    keep: dict[str, str] = field(default_factory=dict)  # files (relative to cwd) that must survive


def cfg(config: Any, **options: Any) -> Callable[[Path], tuple[Any, dict[str, Any]]]:
    return lambda cwd: (config, options)


def _file(cwd: Path, name: str, text: str) -> Path:
    path = cwd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _entrypoint_dir(cwd: Path) -> tuple[Any, dict[str, Any]]:
    (cwd / "scripts").mkdir()
    return {"launch": {"entrypoint": "scripts"}}, {}


def _output_under_file(cwd: Path) -> tuple[Any, dict[str, Any]]:
    _file(cwd, "not-a-dir", "plain file\n")
    return None, {"output_dir": cwd / "not-a-dir" / "runs"}


def _existing_run_dir(cwd: Path) -> tuple[Any, dict[str, Any]]:
    _file(cwd, "out/taken/result.json", '{"status": "FINISHED"}\n')
    _file(cwd, "out/taken/logs/rank0.log", "epoch 1 done\n")
    return {"output": {"run_name": "taken"}}, {}


NAME_RULE = "letters, digits, '.', '_' or '-'"
NPROC_RULE = "between 1 and 1024"

CASES: dict[str, Case] = {
    # --- sections and keys
    "unknown-section": Case(cfg({"trainng": {"epochs": 1}}), ConfigError,
                            ("'trainng'", "did you mean 'training'", "allowed sections")),
    "unknown-launch-key": Case(cfg({"launch": {"nprc": 2}}), ConfigError,
                               ("launch.nprc", "did you mean 'nproc'", "allowed in launch")),
    "model-is-a-list": Case(cfg({"model": ["tiny-encoder"]}), ConfigError, ("model must be a mapping",)),
    "launch-is-a-string": Case(cfg({"launch": "nproc=2"}), ConfigError, ("launch must be a mapping",)),
    "config-is-a-number": Case(cfg(42), ConfigError, ("config must be a path, a YAML/JSON string or a dict",)),
    "config-text-is-a-list": Case(cfg("- a\n- b\n"), ConfigError, ("must be a mapping of sections",)),
    # --- nproc
    "nproc-0": Case(cfg({"launch": {"nproc": 0}}), ConfigError, ("launch.nproc = 0", NPROC_RULE)),
    "nproc-minus-1": Case(cfg(None, nproc=-1), ConfigError, ("launch.nproc = -1", NPROC_RULE)),
    "nproc-1.5": Case(cfg({"launch": {"nproc": 1.5}}), ConfigError, ("launch.nproc = 1.5", '"auto"', NPROC_RULE)),
    "nproc-two": Case(cfg(None, nproc="two"), ConfigError, ("launch.nproc = 'two'", '"auto"', NPROC_RULE)),
    "nproc-5000": Case(cfg({"launch": {"nproc": 5000}}), ConfigError, ("launch.nproc = 5000", NPROC_RULE)),
    "nproc-true": Case(cfg({"launch": {"nproc": True}}), ConfigError, ("launch.nproc = True", '"auto"', NPROC_RULE)),
    "nproc-shell": Case(cfg(None, nproc="2; rm -rf ~"), ConfigError, ("launch.nproc", NPROC_RULE)),
    "nproc-above-cpus": Case(cfg({"launch": {"nproc": 64}}), EnvironmentCheckError,
                             ("nproc 64 is more than the 2 CPU core(s)", "at most 2", "oversubscribe")),
    # --- backend
    "backend-mpi": Case(cfg({"launch": {"backend": "mpi"}}), ConfigError,
                        ("launch.backend = 'mpi'", "auto, gloo, nccl")),
    "backend-nccl-without-gpu": Case(cfg({"launch": {"backend": "nccl"}}), EnvironmentCheckError,
                                     ("nccl but no NVIDIA GPU", "launch.backend: gloo")),
    # --- what to run
    "entrypoint-missing": Case(cfg({"launch": {"entrypoint": "missing_train.py"}}), EnvironmentCheckError,
                               ("launch.entrypoint 'missing_train.py' does not exist", "path of your training script")),
    "entrypoint-is-a-dir": Case(_entrypoint_dir, EnvironmentCheckError,
                                ("launch.entrypoint 'scripts' is not a file", ".py script")),
    "module-not-found": Case(cfg(None, module="no_such_pkg_xyz.train"), EnvironmentCheckError,
                             ("launch.module 'no_such_pkg_xyz.train' was not found", "install the package")),
    "module-bad-name": Case(cfg({"launch": {"module": "my-pkg.train"}}), ConfigError,
                            ("launch.module", "dotted module name")),
    "entrypoint-and-module": Case(cfg({"launch": {"entrypoint": "t.py", "module": "pkg.t"}}), ConfigError,
                                  ("launch.entrypoint", "launch.module", "exclusive", "set one")),
    "args-shell-string": Case(cfg({"launch": {"entrypoint": "t.py", "args": "--lr 3e-5; rm -rf ~"}}), ConfigError,
                              ("launch.args", "list of arguments, one item each")),
    "args-with-dict": Case(cfg({"launch": {"entrypoint": "t.py", "args": ["--x", {"a": 1}]}}), ConfigError,
                           ("launch.args[1]", "string or number")),
    "args-with-bool": Case(cfg({"launch": {"entrypoint": "t.py", "args": [True]}}), ConfigError,
                           ("launch.args[0]", "string or number")),
    # --- outputs
    "output-under-a-file": Case(_output_under_file, EnvironmentCheckError,
                                ("not writable", "is a file, not a directory", "set output.dir")),
    "output-in-proc": Case(cfg(None, output_dir="/proc/nbexec-test-out"), EnvironmentCheckError,
                           ("/proc/nbexec-test-out is not writable", "set output.dir")),
    "output-dir-empty": Case(cfg({"output": {"dir": " "}}, output_dir=None), ConfigError, ("output.dir", "directory path")),
    "run-dir-exists": Case(_existing_run_dir, EnvironmentCheckError,
                           ("already exists and is not empty", "output.run_name"),
                           keep={"out/taken/result.json": '{"status": "FINISHED"}\n',
                                 "out/taken/logs/rank0.log": "epoch 1 done\n"}),
    "run-name-slash": Case(cfg(None, run_name="a/b"), ConfigError, ("output.run_name = 'a/b'", NAME_RULE)),
    "run-name-dotdot": Case(cfg({"output": {"run_name": ".."}}), ConfigError, ("output.run_name = '..'", NAME_RULE)),
    "run-name-rm": Case(cfg(None, run_name=";rm -rf ~"), ConfigError, ("output.run_name = ';rm -rf ~'", NAME_RULE)),
    "run-name-subshell": Case(cfg({"output": {"run_name": "$(id)"}}), ConfigError,
                              ("output.run_name = '$(id)'", NAME_RULE)),
    "run-name-space": Case(cfg(None, run_name="my run"), ConfigError, ("output.run_name = 'my run'", NAME_RULE)),
    "run-name-leading-dash": Case(cfg(None, run_name="-rf"), ConfigError, ("output.run_name = '-rf'", NAME_RULE)),
    "resume-from-missing": Case(lambda cwd: (None, {"resume_from": cwd / "no-such-run" / "checkpoint"}),
                                EnvironmentCheckError, ("resume checkpoint", "does not exist", "checkpoint directory")),
    # --- tracking and launch details
    "experiment-empty": Case(cfg({"tracking": {"experiment": ""}}), ConfigError,
                             ("tracking.experiment = ''", NAME_RULE)),
    "tracking-enabled-yes-string": Case(cfg({"tracking": {"enabled": "yes"}}), ConfigError,
                                        ("tracking.enabled = 'yes'", "true or false")),
    "env-bad-name": Case(cfg({"launch": {"env": {"BAD-NAME": "1"}}}), ConfigError,
                         ("launch.env.BAD-NAME", "[A-Za-z_][A-Za-z0-9_]*")),
    "env-list-value": Case(cfg({"launch": {"env": {"GOOD": [1, 2]}}}), ConfigError,
                           ("launch.env.GOOD", "string or number")),
    "max-restarts-minus-1": Case(cfg({"launch": {"max_restarts": -1}}), ConfigError,
                                 ("launch.max_restarts = -1", "between 0 and 100")),
    "omp-threads-0": Case(cfg({"launch": {"omp_num_threads": 0}}), ConfigError,
                          ("launch.omp_num_threads = 0", "between 1 and 1024")),
    "builtin-trainer-learning-rate": Case(cfg({"training": {"learning_rate": -1}}), ConfigError,
                                          ("training.learning_rate = -1", "> 0.0")),
    # --- config files and overrides
    "yaml-syntax-error": Case(lambda cwd: (_file(cwd, "bad.yaml", "training: {epochs: 2\nmodel: [\n"), {}),
                              ConfigError, ("bad.yaml is not valid YAML/JSON", "line")),
    "config-file-missing": Case(cfg("no-such-config.yaml"), ConfigError,
                                ("'no-such-config.yaml' does not exist", "existing .yaml/.json path")),
    "config-file-txt": Case(lambda cwd: (str(_file(cwd, "config.txt", "training: {epochs: 1}\n")), {}),
                            ConfigError, ("suffix '.txt'", "allowed: .yaml, .yml, .json")),
    "override-without-equals": Case(cfg(None, overrides=["training.epochs"]), ConfigError,
                                    ("'training.epochs' must look like section.key=value",)),
    "override-without-section": Case(cfg(None, overrides=["epochs=3"]), ConfigError,
                                     ("'epochs' must be a dotted path with a section", "training.epochs")),
    "override-unknown-section": Case(cfg(None, overrides=["trainng.epochs=3"]), ConfigError,
                                     ("did you mean 'training'",)),
    "override-into-a-value": Case(cfg({"training": {"epochs": 2}}, overrides=["training.epochs.max=3"]),
                                  ConfigError, ("training.epochs is a int, not a section",)),
}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root: file bytes, or None for a directory."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def refused(error: type[NbexecError], config: Any, **options: Any) -> NbexecError:
    """Launch, expecting ``error``; a job that starts anyway is cancelled and fails the test."""
    try:
        run = launch(config, **options)
    except error as err:
        return err
    run.cancel()
    pytest.fail(f"launch started {run!r} instead of raising {error.__name__}")


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; relative paths in the cases resolve here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25


def test_the_good_baseline_passes(cwd: Path, machine: Machine) -> None:
    """The cases below differ from this launch in one input only; it must be accepted."""
    plan = prepare(None, output_dir=cwd / "out", hardware=machine(cpus=2))

    assert plan.nproc == 2 and plan.backend == "gloo"
    assert snapshot(cwd) == {}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_before_anything_runs(case: Case, cwd: Path, machine: Machine) -> None:
    config, options = case.setup(cwd)
    options.setdefault("output_dir", cwd / "out")
    before_files = snapshot(cwd)
    before_children = children()

    message = str(refused(case.error, config, hardware=machine(cpus=2), **options))
    for words in case.says:
        assert words in message
    assert children() - before_children == set(), "a process was started"
    assert snapshot(cwd) == before_files, "a file or directory was written"
    for name, text in case.keep.items():
        assert (cwd / name).read_text() == text


def test_nproc_above_this_machines_cpus(cwd: Path) -> None:
    """The real machine, detected: more processes than cores is refused (gloo) or than GPUs (nccl)."""
    hardware = detect_hardware()
    nproc = max(64, hardware.cpu_count + 1)
    before_children = children()

    message = str(refused(EnvironmentCheckError, {"launch": {"nproc": nproc}}, output_dir=cwd / "out"))

    assert f"nproc {nproc} is more than the" in message
    assert "set launch.nproc to" in message
    assert children() - before_children == set()
    assert snapshot(cwd) == {}


def test_every_environment_problem_is_reported_at_once(cwd: Path, machine: Machine) -> None:
    (cwd / "a-file").write_text("x")
    before = snapshot(cwd)

    error = refused(
        EnvironmentCheckError,
        {"launch": {"entrypoint": "missing_train.py", "nproc": 64}},
        output_dir=cwd / "a-file" / "runs",
        resume_from=cwd / "gone",
        hardware=machine(cpus=2),
    )

    assert isinstance(error, EnvironmentCheckError)
    problems = error.problems
    assert len(problems) == 4, problems
    expected = [
        "launch.entrypoint 'missing_train.py' does not exist",
        "is not writable",
        "nproc 64 is more than the 2 CPU core(s)",
        "resume checkpoint",
    ]
    for words in expected:
        assert sum(words in p for p in problems) == 1, (words, problems)
    message = str(error)
    assert "4 problems" in message and "nothing was started" in message
    assert all(f"  - {p}" in message for p in problems)
    assert snapshot(cwd) == before


def test_plan_training_refuses_a_run_name_that_escapes_the_output_dir(tmp_path: Path, machine: Machine) -> None:
    with pytest.raises(ConfigError):
        plan_training(load_config(None), output_dir=tmp_path / "out", run_name="../escape", hardware=machine())


# --- the command line: exit codes ----------------------------------------------------------


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbexec", "train", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "trainng.epochs=1"], ["config error", "did you mean 'training'"]),
        (["--set", "training.epochs"], ["config error", "must look like section.key=value"]),
        (["--nproc", "two"], ["config error", "launch.nproc = 'two'"]),
    ],
    ids=["unknown-section", "no-equals", "nproc-word"],
)
def test_cli_bad_config_exits_2(cwd: Path, args: list[str], says: list[str]) -> None:
    proc = run_cli(cwd, "--dry-run", "--output", "out", *args)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    for words in says:
        assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(cwd) == {}


def test_cli_environment_problem_exits_3(cwd: Path) -> None:
    proc = run_cli(cwd, "--output", "out", "--entrypoint", "missing_train.py", "--", "--epochs", "1")

    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "launch.entrypoint 'missing_train.py' does not exist" in proc.stderr
    assert "nothing was started" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(cwd) == {}


def test_cli_config_file_errors_exit_2(cwd: Path) -> None:
    (cwd / "config.yaml").write_text(json.dumps({"launch": {"nprc": 2}}))

    proc = run_cli(cwd, "config.yaml", "--output", "out")

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "launch.nprc (did you mean 'nproc'?)" in proc.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["config.yaml"]
