"""Bad inputs found by the adversarial pass: each gets a clear error, never a raw traceback.

Every case runs the real command line (``python -m nbexec.cli``, an argv list)
in an empty working directory and checks the exit code (2 bad config or usage,
3 environment not ready), that the message names the problem and its fix,
that no Python traceback is shown, and that no run directory or other output
was created. ``tests/core/test_bad_inputs.py`` covers the config and
environment checks of the run path; the cases here are the ones that slipped
past it. Below the table: the same problems through the Python API, and the
few that need a real job (a run-name race, a cancelled run, a failed backup,
a real run under an emoji path).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from runner.conftest import wait_until

from nbexec.errors import EnvironmentCheckError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
TRACEBACK = "Traceback (most recent call last)"
# Guards a hang only (the alias bomb used to keep --dry-run busy for minutes); never a speed limit.
HANG_GUARD_S = 600
EMOJI = "\N{GRINNING FACE}"  # outside the Basic Multilingual Plane
TINY_TRAINER = ["--set", "training.epochs=1", "--set", "data.num_train=32", "--set", "data.num_val=8",
                "--set", "model.d_model=16", "--set", "model.heads=2", "--set", "model.ff_dim=16"]

Setup = Callable[[Path], tuple[list[str], dict[str, str]]]


@dataclass(frozen=True)
class Case:
    """``setup(cwd)`` writes what the case needs and returns (argv after ``nbexec``, extra env)."""

    setup: Setup
    code: int
    says: tuple[str, ...]
    # Paths (relative to cwd) whose bytes must be unchanged; everything else under cwd must not exist.
    keep: tuple[str, ...] = ()
    extra_ok: tuple[str, ...] = field(default=())  # outputs a successful case may create


def args(*argv: str, env: dict[str, str] | None = None) -> Setup:
    return lambda cwd: (list(argv), dict(env or {}))


def _write(cwd: Path, name: str, text: str) -> Path:
    path = cwd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


ALIAS_BOMB = """\
data:
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def _config_file(name: str, text: str, *more: str) -> Setup:
    def setup(cwd: Path) -> tuple[list[str], dict[str, str]]:
        _write(cwd, name, text)
        return ["train", name, "--dry-run", "--output", "out", *more], {}

    return setup


SPACE = "training.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}\n"


def _hpo_study(make: Callable[[Path], None]) -> Setup:
    def setup(cwd: Path) -> tuple[list[str], dict[str, str]]:
        _write(cwd, "space.yaml", SPACE)
        make(cwd / "study.db")
        return ["hpo", "--space", "space.yaml", "--trials", "1", "--study", "study.db", "--no-tracking",
                "--output", "out", "--set", f"launch.entrypoint={FIXTURES / 'ok.py'}"], {}

    return setup


def _other_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:  # e.g. an MLflow store given as the study by mistake
        db.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
        db.execute("INSERT INTO experiments VALUES (0, 'Default')")
    db.close()


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _slurm(sbatch_body: str) -> Setup:
    """Stand-in Slurm tools on PATH; ``sbatch`` behaves as ``sbatch_body`` says."""

    def setup(cwd: Path) -> tuple[list[str], dict[str, str]]:
        tools = cwd.parent / "slurm-bin"
        _tool(tools, "sbatch", sbatch_body)
        for name in ("squeue", "scontrol", "scancel"):
            _tool(tools, name, "exit 0\n")
        env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
        return ["train", "--scheduler", "slurm", "--output", "out", "--run-name", "s1", "--no-tracking"], env

    return setup


def _resume(state_text: str | None, *, from_run_dir: bool = False) -> Setup:
    def setup(cwd: Path) -> tuple[list[str], dict[str, str]]:
        checkpoint = cwd.parent / "earlier" / "checkpoint"
        checkpoint.mkdir(parents=True)
        for name in ("model.pt", "optimizer.pt"):
            (checkpoint / name).write_bytes(b"weights")
        if state_text is not None:
            (checkpoint / "trainer_state.json").write_text(state_text)
        target = checkpoint.parent if from_run_dir else checkpoint
        return ["train", "--output", "out", "--no-tracking", "--resume", str(target)], {}

    return setup


RANK_RULE = "--rank takes ranks 0, 1, ...; not -1"

CASES: dict[str, Case] = {
    # Finding 10: any Unicode in paths (json.dumps escaped an emoji as two surrogates)
    "output-dir-emoji": Case(args("train", "--dry-run", "--output", f"out{EMOJI}"), 0, (f"out{EMOJI}",)),
    "data-dir-emoji": Case(args("train", "--dry-run", "--output", "out", "--data", f"data{EMOJI}"), 0,
                           ("run dir:",)),
    "output-dir-nel-and-tab": Case(args("train", "--dry-run", "--output", "out\u0085\tx"), 0, ("out\u0085\tx",)),
    # Finding 10: a YAML alias bomb, and an alias that refers to itself
    "yaml-alias-bomb": Case(_config_file("bomb.yaml", ALIAS_BOMB), 2,
                            ("config error", "bomb.yaml", "aliases", "more than 100000 values")),
    "yaml-alias-bomb-in-override": Case(
        args("train", "--dry-run", "--output", "out", "--set",
             "data.x=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
             "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
             "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"),
        2, ("config error", "aliases", "more than 100000 values")),
    "yaml-nested-5000-deep": Case(_config_file("deep.yaml", "data: {x: " + "[" * 5000 + "]" * 5000 + "}\n"), 2,
                                  ("config error", "deep.yaml", "nested more than 64 levels deep")),
    "json-nested-5000-deep": Case(_config_file("deep.json", '{"data": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"), 2,
                                  ("config error", "deep.json", "nested more than 64 levels deep")),
    "yaml-recursive-alias": Case(_config_file("loop.yaml", "data:\n  loop: &a [1, *a]\n"), 2,
                                 ("config error", "loop.yaml", "refers to itself")),
    # Finding 10: a study file that is not an Optuna database
    "hpo-study-not-a-database": Case(
        _hpo_study(lambda p: p.write_text("hello, I am a text file\n")), 2,
        ("config error", "study.db", "not an SQLite database", "--study"), keep=("study.db", "space.yaml")),
    "hpo-study-another-database": Case(
        _hpo_study(_other_sqlite), 2,
        ("config error", "study.db", "not an Optuna study", "experiments", "--study"),
        keep=("study.db", "space.yaml")),
    "hpo-study-is-a-directory": Case(
        _hpo_study(lambda p: p.mkdir()), 2, ("config error", "study.db", "is a directory", "--study"),
        keep=("study.db", "space.yaml")),
    # Finding 10: a misconfigured sbatch (the run dir keeps the batch script to debug it)
    "slurm-sbatch-fails": Case(
        _slurm('echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2\n'
               "exit 1\n"),
        3, ("sbatch failed (exit 1)", "Invalid partition name specified", "launch.slurm", "job.sbatch",
            "nothing was started"), extra_ok=("out",)),
    "slurm-sbatch-prints-garbage": Case(
        _slurm('echo "Welcome to the cluster!"\n'), 3,
        ("sbatch printed no job id", "Welcome to the cluster!", "sbatch --version", "nothing was started"),
        extra_ok=("out",)),
    # Finding 10: --resume with a broken checkpoint is refused before anything runs
    "resume-state-not-json": Case(
        _resume("{not json"), 3,
        ("trainer_state.json", "is not valid JSON", "line 1", "intact checkpoint", "nothing was started")),
    "resume-state-not-an-object": Case(
        _resume("[1, 2]"), 3, ("trainer_state.json", "not a JSON object", "intact checkpoint")),
    "resume-run-dir-not-checkpoint": Case(
        _resume('{"epoch": 1}', from_run_dir=True), 3,
        ("trainer_state.json", "is not a checkpoint of the built-in trainer", "earlier/checkpoint")),
    # Finding 10: --rank -1 hid every line; the magic already said this
    "rank-minus-1": Case(args("train", "--dry-run", "--output", "out", "--rank", "-1"), 2, (RANK_RULE,)),
    "rank-beyond-the-job": Case(args("train", "--output", "out", "--nproc", "2", "--rank", "2"), 2,
                                ("config error", "--rank 2", "ranks 0 to 1")),
    # Finding 10: typos in the built-in trainer's keys
    "training-epoch": Case(args("train", "--dry-run", "--output", "out", "--set", "training.epoch=1"), 2,
                           ("config error", "training.epoch", "did you mean 'epochs'", "allowed in training")),
    "training-learing-rate": Case(
        _config_file("typo.yaml", "training:\n  learing_rate: 0.01\n"), 2,
        ("config error", "training.learing_rate", "did you mean 'learning_rate'")),
    "model-dmodel": Case(args("train", "--dry-run", "--output", "out", "--set", "model.dmodel=32"), 2,
                         ("config error", "model.dmodel", "did you mean 'd_model'")),
    "data-num-trian": Case(args("train", "--dry-run", "--output", "out", "--set", "data.num_trian=32"), 2,
                           ("config error", "data.num_trian", "did you mean 'num_train'")),
    # ... while a user's own script may have any keys
    "own-script-any-keys": Case(
        args("train", "--dry-run", "--output", "out", "--entrypoint", str(FIXTURES / "ok.py"),
             "--set", "training.epoch=1", "--set", "training.learing_rate=0.1"), 0, ("run dir:",)),
}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root: file bytes, or None for a directory."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def nbexec_cli(cwd: Path, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nbexec.cli", *argv], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S,
    )


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_a_clear_error(case: Case, cwd: Path) -> None:
    argv, env = case.setup(cwd)
    before = snapshot(cwd)

    proc = nbexec_cli(cwd, argv, env)

    output = proc.stdout + proc.stderr
    assert proc.returncode == case.code, output
    for words in case.says:
        assert words in output, (words, output)
    assert TRACEBACK not in output
    if case.code != 0:
        after = snapshot(cwd)
        new = {p for p in set(after) - set(before) if not p.startswith(case.extra_ok) or not case.extra_ok}
        assert new == set(), f"created {sorted(new)}"
        for name in case.keep:
            assert after[name] == before[name], f"{name} was changed"
    if case.code == 3 and not case.extra_ok:
        assert "nothing was started" in output


# --- the Python API: the same errors, as exceptions -------------------------------------------


def test_resume_from_a_broken_checkpoint_raises_before_anything_is_spawned(tmp_path: Path) -> None:
    from nbexec.executor import launch

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"epoch": 1,')
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    with pytest.raises(EnvironmentCheckError) as info:
        launch(None, output_dir=tmp_path / "out", resume_from=checkpoint, nproc=1)

    assert str(checkpoint / "trainer_state.json") in str(info.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert not (tmp_path / "out").exists()


def test_the_trainer_itself_names_a_broken_state_file(tmp_path: Path) -> None:
    """Under bare torchrun there is no pre-launch check: the trainer's own error names the file."""
    from nbexec.trainers.token_classification.checkpoint import CheckpointError, read_trainer_state

    (tmp_path / "trainer_state.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json is not valid JSON \(line 1") as info:
        read_trainer_state(tmp_path)
    assert str(tmp_path / "trainer_state.json") in str(info.value)


def test_a_study_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    from nbexec.errors import ConfigError
    from nbexec.hpo import run_hpo

    study = tmp_path / "study.db"
    study.write_text("not sqlite")
    with pytest.raises(ConfigError, match="not an SQLite database") as info:
        run_hpo({"launch": {"entrypoint": str(FIXTURES / "ok.py")}}, SPACE, 1, study_path=study)
    assert info.value.field == "study_path"
    assert study.read_text() == "not sqlite"


def test_the_loser_of_a_run_name_race_gets_the_environment_error(tmp_path: Path, machine) -> None:  # noqa: ANN001
    """Both jobs passed the pre-launch check; the other one wrote the run dir first."""
    from nbexec.executor import launch, prepare

    plan = prepare({"launch": {"entrypoint": str(FIXTURES / "ok.py")}, "tracking": {"enabled": False}},
                   output_dir=tmp_path / "out", run_name="same", hardware=machine(cpus=2))
    winner = plan.run_dir / "config.yaml"
    winner.parent.mkdir(parents=True)
    winner.write_text("the other job's config\n")
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    with pytest.raises(EnvironmentCheckError) as info:
        launch(plan=plan)

    assert isinstance(info.value, FileExistsError)  # callers that caught FileExistsError still do
    assert f"run directory {plan.run_dir} already exists" in str(info.value)
    assert "choose another output.run_name" in str(info.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert snapshot(plan.run_dir) == {"config.yaml": b"the other job's config\n"}


def test_cli_maps_a_run_name_taken_while_it_opened_mlflow_to_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The race as the CLI meets it with tracking on: the other job writes the run dir while
    this one checks its MLflow store (after the pre-launch check, before the run dir is written)."""
    from nbexec import cli
    from nbexec.tracking import deferred

    run_dir = tmp_path / "out" / "same"
    real_init = deferred.DeferredTrackedRun.__init__

    def other_job_wins(self, plan, *a, **kw) -> None:  # noqa: ANN001, ANN002, ANN003
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text("the other job's config\n")
        real_init(self, plan, *a, **kw)

    monkeypatch.setattr(deferred.DeferredTrackedRun, "__init__", other_job_wins)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--entrypoint", str(FIXTURES / "ok.py"), "--output", "out", "--run-name", "same",
                     "--nproc", "1", "--quiet"])

    err = capsys.readouterr().err
    assert code == 3, err
    assert f"run directory {run_dir} already exists and is not empty" in err
    assert TRACEBACK not in err
    assert snapshot(run_dir) == {"config.yaml": b"the other job's config\n"}


# --- with real jobs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_run_with_emoji_in_its_output_and_data_paths(cwd: Path) -> None:
    out, data = f"out{EMOJI}", f"data{EMOJI}é"
    proc = nbexec_cli(cwd, ["train", "--output", out, "--data", data, "--run-name", f"r{EMOJI}".encode().hex(),
                            "--nproc", "1", "--quiet", *TINY_TRAINER])

    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = cwd / out / f"r{EMOJI}".encode().hex()
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "FINISHED"
    assert (run_dir / "checkpoint" / "trainer_state.json").is_file()
    assert (cwd / data).is_dir() and any((cwd / data).iterdir())  # the trainer wrote its dataset there
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert config["output"]["dir"] == out and config["data"]["path"] == data


@pytest.mark.slow
def test_two_jobs_given_the_same_run_name_at_once(cwd: Path) -> None:
    """Tracking on: one job runs, the other gets the clean exit 3, whichever check it meets."""
    argv = [sys.executable, "-m", "nbexec.cli", "train", "--entrypoint", str(FIXTURES / "ok.py"), "--output",
            "out", "--run-name", "same", "--nproc", "1", "--quiet"]
    procs = [subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]

    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outputs
    loser = next(err for p, (_, err) in zip(procs, outputs) if p.returncode == 3)
    assert "run directory" in loser and "already exists and is not empty" in loser
    assert TRACEBACK not in loser
    assert json.loads((cwd / "out" / "same" / "result.json").read_text())["status"] == "FINISHED"


@pytest.mark.slow
def test_a_killed_run_records_exit_code_minus_15(tmp_path: Path) -> None:
    """KILLED means nbexec's cancel stopped the job (SIGTERM); result.json says so every time."""
    from nbexec.executor import launch
    from nbexec.result import RunStatus, TrainingResult

    run = launch({"launch": {"entrypoint": str(FIXTURES / "hang.py"), "nproc": 1}, "tracking": {"enabled": False}},
                 output_dir=tmp_path / "out")
    wait_until(lambda: run.done() or any("ready" in ln.text for ln in run.lines(0)), HANG_GUARD_S,
               "the job's first line")
    assert not run.done(), run.outcome
    run.cancel(grace=5)

    saved = TrainingResult.load(run.run_dir)
    assert saved.status is RunStatus.KILLED
    assert saved.exit_code == -15


@pytest.mark.slow
def test_a_finished_run_whose_backup_fails_shows_only_the_clean_message(cwd: Path) -> None:
    backups = cwd.parent / "backups"
    backups.mkdir()
    (backups / "nbexec").write_text("a file where the experiment's folder should go")

    proc = nbexec_cli(cwd, ["train", "--entrypoint", str(FIXTURES / "ok.py"), "--nproc", "1", "--quiet",
                            "--no-tracking", "--output", "out", "--run-name", "bk", "--backup", str(backups)])

    assert proc.returncode == 4, proc.stderr
    assert "backup:     FAILED (cannot create the backup location" in proc.stderr
    assert "BackupWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert proc.stderr.count("cannot create the backup location") == 1
