"""An MLflow UI for a SQLite store, for real: ``mlflow server`` on 127.0.0.1, started, answering
HTTP, reused (in this process, from another one, by ``nbexec ui``), making runs links, stopped
with no process left (the API, and ``nbexec ui`` on Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from nbexec.config import load_config
from nbexec.errors import TrackingError
from nbexec.render.links import run_url, server_url
from nbexec.result import RunStatus
from nbexec.tracking import create_training_mlflow_run
from nbexec.tracking.ui import RECORD_NAME, start_ui, stop_ui
from nbexec.tracking.ui import _started as started_here

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def _group(pid: int) -> list[psutil.Process]:
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def _left(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _in_another_process(store_uri: str) -> dict:
    code = (
        "import json, sys\n"
        "from nbexec.tracking.ui import start_ui\n"
        "ui = start_ui(sys.argv[1])\n"
        "print(json.dumps({'url': ui.url, 'pid': ui.pid, 'owned': ui.owned}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, store_uri], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_ui_serves_the_store_links_its_runs_and_stops_leaving_nothing(store_uri: str, tmp_path: Path) -> None:
    tracked = create_training_mlflow_run(load_config({"tracking": {"experiment": "ui"}, "launch": {"nproc": 1}}),
                                         run_name="seen-in-the-ui", tracking_uri=store_uri)
    tracked.end(RunStatus.FINISHED)
    assert tracked.setup.run_url(tracked.run_id) is None  # no UI yet: no page to link to

    ui = start_ui(store_uri)
    group = _group(ui.pid)
    try:
        assert ui.owned and ui.url.startswith("http://127.0.0.1:")
        cmdline = psutil.Process(ui.pid).cmdline()
        assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"  # never on another interface
        # it answers HTTP with this store's runs
        found = _get_json(f"{ui.url}/api/2.0/mlflow/runs/get?run_id={tracked.run_id}")
        assert found["run"]["info"]["run_name"] == "seen-in-the-ui"
        # every place that links a run now links it to this UI, in the training view
        assert server_url(store_uri) == ui.url
        assert tracked.where() == run_url(ui.url, tracked.run_id, tracked.experiment_id)
        assert tracked.where().endswith("?workflowType=machine_learning")

        # reused, not started twice: in this process, and from another one (its record)
        assert start_ui(store_uri) is ui
        other = _in_another_process(store_uri)
        assert other == {"url": ui.url, "pid": ui.pid, "owned": False}
        assert ui.running()  # the other process left it running when it exited
        # asking for another port while it runs says what to do
        with pytest.raises(TrackingError, match="already serves .* stop it first"):
            start_ui(store_uri, port=_free_port_not(ui.url))
    finally:
        ui.stop()
    assert _left(group) == [], "a process of the UI outlived stop()"
    assert server_url(store_uri) is None and not ui.running()
    assert not (tmp_path / "store" / RECORD_NAME).exists()
    assert store_uri not in started_here
    ui.stop()  # idempotent


def test_a_port_that_is_taken_is_refused_before_anything_starts(store_uri: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        with pytest.raises(TrackingError, match=f"port {port} on 127.0.0.1 is taken by another program"):
            start_ui(store_uri, port=port)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert server_url(store_uri) is None


def test_stores_without_a_local_ui() -> None:
    remote = start_ui("http://127.0.0.1:5999/")
    assert remote.remote and remote.url == "http://127.0.0.1:5999" and remote.pid is None
    remote.stop()  # a tracking server is never touched
    with pytest.raises(TrackingError, match="SQLite store"):
        start_ui("postgresql://db/mlflow")


def test_nbexec_ui_serves_until_ctrl_c_and_a_second_one_reuses_it(store_uri: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "nbexec", "ui", "--store", store_uri]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()  # blocks until the UI answers (or the command fails)
        assert "MLflow UI for" in line and "started here" in line, line + server.stderr.read()
        url = line.split(" at ", 1)[1].split("/#/", 1)[0]
        pid = int(line.split("(pid ", 1)[1].split(",", 1)[0])
        assert _get_json(f"{url}/api/2.0/mlflow/experiments/search?max_results=5")["experiments"]
        group = _group(pid)

        again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 0, again.stderr
        assert f"at {url}/#/experiments" in again.stdout and "already running" in again.stdout

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
        assert "stopped the MLflow UI" in server.stdout.read()
        assert _left(group) == []
        assert stop_ui(store_uri) is None  # nothing left to stop
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _free_port_not(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            candidate = int(s.getsockname()[1])
        if candidate != port:
            return candidate


def test_without_full_mlflow_the_ui_says_which_extra_brings_it(store_uri: str, monkeypatch) -> None:  # noqa: ANN001
    """nbexec's own install is mlflow-skinny (no web server): starting a UI names the fix, starts nothing."""
    import nbexec.tracking.store as store

    monkeypatch.setattr(store, "mlflow_ui_installed", lambda: False)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(TrackingError, match=r"pip install 'nbexec\[ui\]'"):
        start_ui(store_uri)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert store._ui_hint("sqlite:////tmp/x/mlflow.db", "1").endswith("(the UI: pip install 'nbexec[ui]')")
