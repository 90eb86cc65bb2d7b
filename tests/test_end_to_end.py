"""The main job end to end through the command line: train 2 ranks, load the checkpoint, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nbexec.events import read_events
from nbexec.trainers.token_classification.model import build_model

pytestmark = pytest.mark.slow

TINY = {
    "model": {"d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 320, "num_val": 64, "seq_len": 16},
    "launch": {"nproc": 2},
}


def nbexec_train(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``nbexec train`` on the embedded defaults: no MLFLOW_TRACKING_URI, so ./mlflow.db."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "nbexec", "train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_train_two_ranks_then_resume_from_the_checkpoint(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))

    first = nbexec_train(tmp_path, "config.yaml", "--run-name", "first")
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "outputs" / "first"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "FINISHED" and result["nproc"] == 2
    assert "[rank0] epoch 1/1" in first.stdout and "FINISHED" in first.stdout
    # each step's loss once: the trainer's own line, not nbexec's metric line too (--metric-lines adds it)
    assert " loss " in first.stdout and "[nbexec] step" not in first.stdout
    # config.yaml says what ran: the trainer's defaults and the resolved launch, no empty section
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert all(written.values()) and written["training"]["weight_decay"] == 0.01
    assert (written["launch"]["nproc"], written["launch"]["backend"]) == (2, "gloo")
    assert 0.0 <= result["metrics"]["val_f1"] <= 1.0

    # the checkpoint is real: it loads into a fresh model of the same shape
    # tracked in MLflow: one run, FINISHED, with the trainer's metrics and the artifacts
    from mlflow import MlflowClient

    assert (tmp_path / "mlflow.db").is_file()  # the embedded default store, in the project dir
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("nbexec").experiment_id])) == 1
    mlrun = client.get_run(result["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "first"
    assert mlrun.data.metrics["val_f1"] == pytest.approx(result["metrics"]["val_f1"])
    assert mlrun.data.params["training.learning_rate"] == "0.01"
    assert mlrun.data.params["training.weight_decay"] == "0.01"  # a default: the params are what ran
    assert mlrun.data.params["launch.backend"] == "gloo"
    assert len(client.get_metric_history(mlrun.info.run_id, "loss")) >= 2
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id)} >= {"config.yaml", "logs", "result.json"}
    assert f"mlflow:     {result['mlflow_run_id']} (experiment nbexec, id " in first.stdout
    assert "open:       mlflow ui --backend-store-uri sqlite:///mlflow.db\n" in first.stdout  # as typed in the project dir

    state = json.loads((run_dir / "checkpoint/trainer_state.json").read_text())
    model = build_model(state["config"]["model"], vocab_size=len(state["dataset"]["vocab"]),
                        num_labels=len(state["dataset"]["labels"]), max_len=16)
    model.load_state_dict(torch.load(run_dir / "checkpoint/model.pt", weights_only=True))
    assert state["epoch"] == 1

    resumed = nbexec_train(
        tmp_path, "config.yaml", "--run-name", "second", "--set", "training.epochs=2",
        "--resume", str(run_dir / "checkpoint"), "--metric-lines",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "[nbexec] step" in resumed.stdout  # asked for
    events = read_events(tmp_path / "outputs/second/events.jsonl")
    epochs = {ev["epoch"] for ev in events if ev["kind"] == "progress"}
    assert epochs == {2}  # epoch 1 came from the checkpoint, not trained again
    assert any(ev["kind"] == "message" and "resumed" in ev["text"] for ev in events)
    second_state = json.loads((tmp_path / "outputs/second/checkpoint/trainer_state.json").read_text())
    assert second_state["epoch"] == 2 and second_state["global_step"] == 2 * state["global_step"]
