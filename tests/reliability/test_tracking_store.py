"""The MLflow store survives interruption and concurrency; a job that runs untracked says so.

Finding 1 of the reliability pass: a new SQLite store killed while MLflow
made its tables (or made by several jobs at once) was left half-made, and
every later job in that directory ran untracked and exited 0. Finding 6: a
server that answers /health but hangs on its API held the CLI for minutes.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from runner.conftest import wait_until

pytestmark = pytest.mark.slow
OK = Path(__file__).resolve().parents[1] / "fixtures" / "scripts" / "ok.py"
JOB_WAIT_S = 300  # guards a hang, not a time budget


def env_for(uri: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    return env


def train(cwd: Path, *args: str, uri: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbexec.cli", "train", "--entrypoint", str(OK), "--nproc", "1",
                           *args], cwd=cwd, env=env_for(uri), capture_output=True, text=True, timeout=JOB_WAIT_S)


def only_run_dir(root: Path) -> Path:
    dirs = [p for p in (root / "outputs").iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_a_store_whose_creation_is_killed_is_never_left_half_made(tmp_path):
    db = tmp_path / "mlflow.db"
    creating = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nbexec.tracking import setup_mlflow; setup_mlflow(sys.argv[1])",
         f"sqlite:///{db}"], env=env_for(None))
    # kill it while MLflow migrates the new schema (a version, not yet the last), wherever it does that
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()

    def migrating() -> bool:
        for path in tmp_path.glob("*mlflow.db*"):
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1) as conn:
                    version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.Error:
                continue  # no version table yet, or being written: look again
            if version and version[0] != head:
                return True
        return False

    wait_until(lambda: migrating() or creating.poll() is not None, JOB_WAIT_S, "MLflow to start migrating")
    assert creating.poll() is None, "MLflow finished making the store before it could be caught mid-migration"
    creating.send_signal(signal.SIGKILL)
    creating.wait()

    done = train(tmp_path, uri=f"sqlite:///{db}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "untracked" not in done.stdout + done.stderr, done.stdout + done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]
    result = json.loads((only_run_dir(tmp_path) / "result.json").read_text())
    assert result["tracking"]["state"] == "tracked", result["tracking"]
    assert not list(tmp_path.glob(".mlflow.db.creating-*")), "a killed creator's temp file was left"


def test_jobs_starting_at_once_in_a_new_directory_share_one_store(tmp_path):
    env = env_for(None)  # the default store: ./mlflow.db, new
    procs = [subprocess.Popen([sys.executable, "-m", "nbexec.cli", "train", "--entrypoint", str(OK), "--nproc", "1",
                               "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=JOB_WAIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert not [out for out in outputs if "untracked" in out], outputs
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert sorted(conn.execute("SELECT status FROM runs").fetchall()) == [("FINISHED",)] * 3
    results = [json.loads((d / "result.json").read_text()) for d in (tmp_path / "outputs").iterdir()]
    assert [r["tracking"]["state"] for r in results] == ["tracked"] * 3, [r["tracking"] for r in results]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(
            lambda c: c.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)"),
            ["half-created", "move it aside", "mv "], id="tables-but-no-schema-version"),
        pytest.param(
            lambda c: (c.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)"),
                       c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"),
                       c.execute("INSERT INTO alembic_version VALUES ('451aebb31d03')")),  # MLflow 1.x's schema
            ["schema version 451aebb31d03", "mlflow db upgrade", "move it aside"], id="cut-off-upgrade"),
    ],
)
def test_a_broken_store_is_refused_before_anything_runs_and_says_how_to_fix_it(tmp_path, make, says):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        make(conn)
    before = db.read_bytes()
    done = train(tmp_path, uri=f"sqlite:///{db}")
    assert done.returncode == 3, done.stdout + done.stderr
    for words in says:
        assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists(), "a run dir was made for a job that could not be tracked"
    assert db.read_bytes() == before, "the broken store was changed"


class _HangingServer(http.server.ThreadingHTTPServer):
    """Answers /health like an MLflow server, then never answers an API call (until closed)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.release = threading.Event()
        release = self.release

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"OK")
                else:
                    release.wait()

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_server_that_hangs_does_not_hold_the_job_and_the_result_says_untracked(tmp_path):
    server = _HangingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        done = train(tmp_path, "--set", "tracking.timeout=3", uri=uri)
    finally:
        server.release.set()
        server.shutdown()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # the training's outcome is the training's
    result = json.loads((only_run_dir(tmp_path) / "result.json").read_text())
    assert result["status"] == "FINISHED"
    assert result["tracking"]["state"] == "untracked" and "3 s" in result["tracking"]["reason"], result["tracking"]
    assert "untracked" in out and "()" not in out


def test_tracking_required_stops_the_launch_when_the_run_cannot_be_opened(tmp_path):
    server = _HangingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        done = train(tmp_path, "--set", "tracking.required=true", "--set", "tracking.timeout=3", uri=uri)
    finally:
        server.release.set()
        server.shutdown()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "nothing was started" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("later", ["the next launch", "nbexec doctor"])
def test_a_run_left_running_by_a_killed_launcher_is_ended_later(tmp_path, later):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    until_file = Path(__file__).resolve().parents[1] / "notebook" / "scripts" / "until_file.py"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "nbexec.cli", "train", "--entrypoint", str(until_file), "--nproc", "1", "--quiet",
         "--", str(tmp_path / "never")], cwd=tmp_path, env=env_for(uri))

    def open_run() -> str | None:
        for joined in tmp_path.glob("outputs/*/tracking.json"):
            info = json.loads(joined.read_text())
            return info.get("run_id")
        return None

    wait_until(lambda: open_run() or launcher.poll() is not None, JOB_WAIT_S, "the job's MLflow run to open")
    run_id = open_run()
    assert run_id, f"the launcher ended first (rc {launcher.poll()})"
    launcher.send_signal(signal.SIGKILL)  # no chance to end its run
    launcher.wait()
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"

    if later == "the next launch":  # against the same store, on this host
        done = train(tmp_path, uri=uri)
    else:
        done = subprocess.run([sys.executable, "-m", "nbexec.cli", "doctor"], cwd=tmp_path, env=env_for(uri),
                              capture_output=True, text=True, timeout=JOB_WAIT_S)
        assert f"ended 1 run(s) KILLED whose launcher on this host had died: {run_id}" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    left = client.get_run(run_id)
    assert left.info.status == "KILLED"
    assert "launcher" in left.data.tags["nbexec.failure"] and "SIGKILL" in left.data.tags["nbexec.failure"]
