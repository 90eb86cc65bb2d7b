"""Every way the launching process can end keeps the job's outcome, and leaves nothing running.

Real ``nbexec train`` processes (argv lists) running real torchrun/gloo jobs,
real signals, a real SQLite MLflow store and a real Jupyter kernel. Each test
waits for observable facts (a printed line, a process) and checks afterwards:
the exit code, what was printed, ``result.json``, the MLflow run's status,
that no process of the job is left, and that no log socket folder is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from runner.conftest import SCRIPTS, alive, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebook"))  # the kernel driver, as tests/notebook use it
from kernel_driver import Kernel, kernel_env  # noqa: E402

pytestmark = pytest.mark.slow

NOTEBOOK_SCRIPTS = Path(__file__).resolve().parents[1] / "notebook" / "scripts"

# A rank that ignores SIGTERM: stopping it takes the whole grace period, unless told to hurry.
IGNORE_TERM = """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"ready rank {os.environ['RANK']} ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)
"""


class Cli:
    """``python -m nbexec train ARGS`` with its stdout and stderr collected line by line as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nbexec", "train", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(pipe: object, into: list[str]) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, *, stream: str = "stdout", timeout: float = 120.0) -> None:
        lines = self.out if stream == "stdout" else self.err
        wait_until(lambda: any(text in ln for ln in lines), timeout, f"{text!r} on the CLI's {stream}\n{self}")

    def finish(self, timeout: float = 120.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"nbexec train still running {timeout} s later\n{self}") from None
        for t in self._readers:
            t.join(10)
        return rc

    def job(self) -> list[psutil.Process]:
        """Every process below the CLI now: guard, torchrun, ranks, their children."""
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __repr__(self) -> str:  # what an assertion about it shows
        return f"nbexec train exited {self.proc.returncode}\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The test process's environment (with the session's MLflow store) and a TMPDIR of the test's own.

    The log sockets' folders are made in TMPDIR: the test can see every one of them.
    """
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)
    assert env.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:///"), "the session store (tests/conftest.py)"
    return env, tmp


def result_of(run_dir: Path) -> dict:
    path = run_dir / "result.json"
    assert path.is_file(), f"no result.json in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    return json.loads(path.read_text())


def mlflow_status(run_id: str | None) -> str:
    from mlflow import MlflowClient

    assert run_id, "result.json has no MLflow run id"
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status


def socket_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("nbexec-*"))


def start_hanging_job(tmp_path: Path, env: dict[str, str], name: str, script: Path | None = None) -> tuple[Cli, list]:
    """A 2-rank job that runs until stopped; returns once both ranks said they are ready."""
    cli = Cli(
        ["--entrypoint", str(script or SCRIPTS / "hang.py"), "--nproc", "2", "--output", str(tmp_path),
         "--run-name", name],
        env, tmp_path,
    )
    try:
        for rank in (0, 1):
            cli.wait_for(f"[rank{rank}] ready rank {rank}")
    except BaseException:
        cli.kill()
        raise
    return cli, cli.job()


# --- the CLI ends through a signal ------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [
        (signal.SIGINT, 130, "nbexec: interrupted; stopping the job"),
        (signal.SIGTERM, 143, "nbexec: got SIGTERM; stopping the job"),
        (signal.SIGHUP, 129, "nbexec: got SIGHUP; stopping the job"),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_to_the_cli_cancels_the_job_and_keeps_its_outcome(tmp_path, tmpdir_env, signum, code, said):
    env, tmp = tmpdir_env
    cli, job = start_hanging_job(tmp_path, env, "sig")
    try:
        assert len(job) >= 6, job  # guard, torchrun, 2 ranks, 2 grandchildren
        cli.proc.send_signal(signum)
        rc = cli.finish()
    finally:
        cli.kill()

    assert rc == code, cli
    assert said in cli.stderr, cli
    assert "nbexec: sig KILLED; logs in " in cli.stderr, cli
    result = result_of(tmp_path / "sig")
    assert result["status"] == "KILLED"
    assert mlflow_status(result["mlflow_run_id"]) == "KILLED"
    assert alive(job) == [], [p.cmdline() for p in alive(job)]
    assert socket_dirs(tmp) == []


def test_signals_while_stopping_skip_the_grace_period_but_not_the_bookkeeping(tmp_path, tmpdir_env):
    env, tmp = tmpdir_env
    env["NBEXEC_GUARD_GRACE"] = "600"  # only the CLI's own grace period (10 s) or a hurry ends the ranks
    script = tmp_path / "ignore_term.py"
    script.write_text(IGNORE_TERM)
    cli = Cli(["--entrypoint", str(script), "--nproc", "2", "--output", str(tmp_path), "--run-name", "twice"],
              env, tmp_path)
    try:
        for rank in (0, 1):
            cli.wait_for(f"[rank{rank}] ready rank {rank} ignoring SIGTERM")
        job = cli.job()
        cli.proc.send_signal(signal.SIGINT)
        cli.wait_for("stopping the job", stream="stderr")
        # The ranks ignore SIGTERM: the job is being stopped, inside the grace period.
        cli.proc.send_signal(signal.SIGINT)
        cli.wait_for("without the grace period", stream="stderr")
        cli.proc.send_signal(signal.SIGTERM)  # and once more, for good measure
        rc = cli.finish()
    finally:
        cli.kill()

    assert rc == 130, cli
    assert "nbexec: twice KILLED; logs in " in cli.stderr, cli
    result = result_of(tmp_path / "twice")
    assert result["status"] == "KILLED"
    assert mlflow_status(result["mlflow_run_id"]) == "KILLED"
    assert alive(job) == [], [p.cmdline() for p in alive(job)]
    assert socket_dirs(tmp) == []


def test_a_killed_cli_leaves_no_job_and_its_socket_folder_goes_at_the_next_start(tmp_path, tmpdir_env):
    env, tmp = tmpdir_env
    cli, job = start_hanging_job(tmp_path, env, "killed")
    try:
        assert socket_dirs(tmp), "the running job's socket folder"
        cli.proc.send_signal(signal.SIGKILL)
        cli.finish()
        # the guard stops the job when its parent dies (nothing can write the outcome: no one is left)
        wait_until(lambda: not alive(job), 30, "the job to stop after its CLI was killed")
    finally:
        cli.kill()
    assert socket_dirs(tmp), "a SIGKILLed process cannot remove its own folder"

    after = Cli(["--entrypoint", str(SCRIPTS / "ok.py"), "--nproc", "2", "--output", str(tmp_path),
                 "--run-name", "after"], env, tmp_path)
    assert after.finish() == 0, after
    assert socket_dirs(tmp) == [], "the next start removes the folder of the dead one"


def test_an_error_before_the_start_does_not_say_starting(tmp_path, tmpdir_env):
    env, _ = tmpdir_env
    (tmp_path / "a-file").write_text("")
    cli = Cli(["--entrypoint", str(SCRIPTS / "ok.py"), "--nproc", "2", "--output", str(tmp_path),
               "--run-name", "never", "--backup", str(tmp_path / "a-file" / "sub")], env, tmp_path)
    assert cli.finish() == 3, cli
    assert "nbexec: backup: cannot create the backup folder" in cli.stderr, cli
    assert "starting" not in cli.stdout + cli.stderr, cli


def test_the_started_line_comes_first(tmp_path, tmpdir_env):
    env, _ = tmpdir_env
    cli = Cli(["--entrypoint", str(SCRIPTS / "ok.py"), "--nproc", "2", "--output", str(tmp_path),
               "--run-name", "first"], env, tmp_path)
    assert cli.finish() == 0, cli
    assert cli.out[0].startswith("nbexec: starting first: 2 x gloo, logs in "), cli


# --- parts of the job die ---------------------------------------------------------------------


def _the(job: list[psutil.Process], marker: str) -> psutil.Process:
    found = [p for p in job if any(marker in part for part in p.cmdline())]
    assert len(found) == 1, [p.cmdline() for p in job]
    return found[0]


def test_killing_the_guard_stops_the_whole_job(tmp_path, tmpdir_env):
    env, tmp = tmpdir_env
    cli, job = start_hanging_job(tmp_path, env, "noguard")
    try:
        _the(job, "runner/guard.py").send_signal(signal.SIGKILL)
        rc = cli.finish()
    finally:
        cli.kill()
    assert rc == 1, cli
    assert "nbexec: noguard FAILED" in cli.stderr and "torchrun was killed by SIGKILL" in cli.stderr, cli
    result = result_of(tmp_path / "noguard")
    assert result["status"] == "FAILED"
    assert mlflow_status(result["mlflow_run_id"]) == "FAILED"
    assert alive(job) == [], [p.cmdline() for p in alive(job)]
    assert socket_dirs(tmp) == []


def test_killing_torchrun_is_reported_as_such_and_stops_the_job(tmp_path, tmpdir_env):
    env, tmp = tmpdir_env
    cli, job = start_hanging_job(tmp_path, env, "notorchrun")
    try:
        (torchrun,) = _the(job, "runner/guard.py").children()
        assert "torch.distributed.run" in torchrun.cmdline()
        torchrun.send_signal(signal.SIGKILL)
        rc = cli.finish()
    finally:
        cli.kill()
    assert rc == 1, cli
    assert "torchrun was killed by SIGKILL" in cli.stderr, cli
    launcher_log = (tmp_path / "notorchrun" / "logs" / "launcher.log").read_text()
    assert "Traceback" not in launcher_log and "OSError" not in launcher_log, launcher_log
    result = result_of(tmp_path / "notorchrun")
    assert result["status"] == "FAILED" and result["exit_code"] == -signal.SIGKILL
    assert mlflow_status(result["mlflow_run_id"]) == "FAILED"
    assert alive(job) == [], [p.cmdline() for p in alive(job)]
    assert socket_dirs(tmp) == []


# --- the kernel ends while a background job runs ----------------------------------------------


@pytest.mark.parametrize("how", ["shutdown", "restart"])
def test_a_kernel_shutdown_or_restart_cancels_its_background_jobs(tmp_path, session_tracking_store, how):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = kernel_env(session_tracking_store)
    env["TMPDIR"] = str(tmp)
    kernel = Kernel(tmp_path, env)
    # Shutting down waits this long before it signals the kernel: a bound on a hang here,
    # not the 5 s a server gives (how long the cancel takes is asserted below instead).
    kernel.km.shutdown_wait_time = 60
    try:
        kernel_pid = kernel.pid
        stop = tmp_path / "never"
        cell = kernel.run(
            "%load_ext nbexec\n"
            f"h = %train --background --entrypoint {NOTEBOOK_SCRIPTS / 'until_file.py'} --nproc 2 "
            f"--output {tmp_path} --run-name bg -- {stop}\n"
        )
        assert cell.ok, cell.error
        logs = tmp_path / "bg" / "logs"
        wait_until(lambda: all("tick 3 " in _read(logs / f"rank{r}.log") for r in (0, 1)), 120, "both ranks ticking")
        job = psutil.Process(kernel_pid).children(recursive=True)
        assert len(job) >= 4, job  # guard, torchrun, 2 ranks

        if how == "shutdown":
            kernel.km.shutdown_kernel(now=False)
        else:
            kernel.km.restart_kernel(now=False)
            kernel.kc.wait_for_ready(timeout=60)
            again = kernel.run("print('alive again')")
            assert again.ok and again.stdout.strip() == "alive again"
        assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        kernel.close()

    result = result_of(tmp_path / "bg")
    assert result["status"] == "KILLED"
    assert mlflow_status(result["mlflow_run_id"]) == "KILLED"
    assert alive(job) == [], [p.cmdline() for p in alive(job)]
    assert socket_dirs(tmp) == []


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
