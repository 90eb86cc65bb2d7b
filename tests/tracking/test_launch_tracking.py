"""launch() tracks by default: one MLflow run per job; an unreachable store stops the launch first."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

import nbexec
from nbexec.errors import TrackingError

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_spawns_and_writes_nothing(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    config = {"tracking": {"uri": f"http://127.0.0.1:{closed_port()}"}}
    with pytest.raises(TrackingError) as info:
        nbexec.launch(config, entrypoint=SCRIPTS / "ok.py", output_dir=tmp_path / "out", nproc=1)
    assert "127.0.0.1" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.mark.slow
def test_cancelled_launch_ends_its_run_killed(store_uri, client, tmp_path):
    run = nbexec.launch(
        {"tracking": {"uri": store_uri, "experiment": "cancel"}},
        entrypoint=SCRIPTS / "hang.py", output_dir=tmp_path, nproc=1,
    )
    run_id = run.tracking.run_id
    assert client.get_run(run_id).info.status == "RUNNING"  # open before the job ends
    run.cancel(grace=1)
    assert client.get_run(run_id).info.status == "KILLED"
    assert nbexec.TrainingResult.load(tmp_path / run.name).mlflow_run_id == run_id
