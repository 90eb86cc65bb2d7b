"""launch() tracks by default: one MLflow run per job; an unreachable store stops the launch first."""

from __future__ import annotations

import json
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


@pytest.mark.slow
@pytest.mark.parametrize("metrics_from", ["parent", "rank0"])
def test_trainer_metrics_reach_mlflow_once_whoever_sends_them(store_uri, client, tmp_path, metrics_from):
    config = {
        "model": {"d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
        "training": {"learning_rate": 1e-2, "batch_size": 16, "epochs": 1, "log_every": 2},
        "data": {"path": str(tmp_path / "data"), "num_train": 320, "num_val": 64, "seq_len": 16},
        "tracking": {"uri": store_uri, "experiment": f"from-{metrics_from}", "metrics_from": metrics_from},
    }
    run = nbexec.launch(config, output_dir=tmp_path, nproc=2)
    result = run.result(timeout=180)
    logged = [ev for ev in run.events if ev["kind"] == "metrics" and "loss" in ev["metrics"]]
    history = client.get_metric_history(result.mlflow_run_id, "loss")
    # every value rank 0 reported, once, with its step
    assert sorted((m.step, m.value) for m in history) == sorted(
        (ev["step"], pytest.approx(ev["metrics"]["loss"])) for ev in logged
    )
    assert len(history) == 5  # 320 samples / 2 ranks / batch 16 = 10 steps, logged every 2
    tags = client.get_run(result.mlflow_run_id).data.tags
    assert tags["nbexec.child_logged"] == "true"  # streamed live, by the parent or by rank 0
    child_env = (tmp_path / run.name / "command.txt").read_text()
    # Either way the run is opened while the job starts; the ranks get its id from tracking.json.
    joined = json.loads((tmp_path / run.name / "tracking.json").read_text())
    assert joined["state"] == "open" and joined["run_id"] == result.mlflow_run_id
    assert f"MLFLOW_TRACKING_URI={store_uri}" in child_env
    assert f"NBEXEC_MLFLOW_CHILD_METRICS={1 if metrics_from == 'rank0' else 0}" in child_env


@pytest.mark.slow
def test_run_that_cannot_be_opened_after_the_preflight_leaves_the_training_intact(store_uri, client, tmp_path):
    # The store answers the preflight, but the experiment was deleted: opening the run fails
    # while the job already runs. The job's outcome stays; the problem is said where the job's lines go.
    from nbexec.runner.sinks import Sink

    class Collect(Sink):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def on_lines(self, lines) -> None:  # noqa: ANN001
            self.lines += [ln.text for ln in lines]

    collect = Collect()
    client.delete_experiment(client.create_experiment("deleted-meanwhile"))
    run = nbexec.launch(
        {"tracking": {"uri": store_uri, "experiment": "deleted-meanwhile"}},
        entrypoint=SCRIPTS / "ok.py", output_dir=tmp_path, nproc=2, sinks=[collect],
    )
    result = run.result(timeout=180)
    assert result.status is nbexec.RunStatus.FINISHED and result.mlflow_run_id is None
    assert nbexec.TrainingResult.load(result.run_dir).status is nbexec.RunStatus.FINISHED
    notes = [text for text in collect.lines if text.startswith("nbexec:")]
    assert notes and "ran untracked" in notes[0] and "deleted-meanwhile" in notes[0], notes
    assert run.tracking.where().startswith("not tracked")
    assert client.search_runs([client.get_experiment_by_name("deleted-meanwhile").experiment_id]) == []
