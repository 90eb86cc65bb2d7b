"""The Colab story end to end, each step a fresh process through the CLI:
train -> backup -> delete outputs and mlflow.db -> restore -> resume -> continuous history and lineage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_run_backup import TINY


def nbexec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the project's ./mlflow.db
    return subprocess.run([sys.executable, "-m", "nbexec", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:  # noqa: ANN001
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_train_backup_lose_everything_restore_resume(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    project, backups = tmp_path / "content", tmp_path / "drive"
    project.mkdir()
    (project / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    train = ["train", "tiny.yaml", "--nproc", "2", "--quiet", "--output", "outputs", "--experiment", "fresh",
             "--backup", str(backups)]

    # session 1: train with --backup
    out = ok(nbexec(*train, "--run-name", "first", cwd=project))
    location = backups / "fresh" / "first"
    assert f"  backup:     {location} (" in out and "verified" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    [first] = client.search_runs([client.get_experiment_by_name("fresh").experiment_id])
    first_id = first.info.run_id
    first_loss = history(client, first_id, "loss")
    first_state = json.loads((project / "outputs" / "first" / "checkpoint" / "trainer_state.json").read_text())
    assert first_loss and first_state["epoch"] == 1

    # the VM is recycled: outputs, the store and the artifacts are gone
    shutil.rmtree(project / "outputs")
    shutil.rmtree(project / "mlartifacts")
    (project / "mlflow.db").unlink()
    # (this test process read the old file: drop MLflow's pooled connections to it, as a fresh session has none)
    from nbexec.tracking.store import forget_database

    forget_database(f"sqlite:///{project / 'mlflow.db'}")

    # session 2: restore, then resume
    out = ok(nbexec("restore", str(location), cwd=project))
    checkpoint = project / "outputs" / "first" / "checkpoint"
    assert f"resume with: nbexec train CONFIG --resume {checkpoint}" in out
    assert json.loads((checkpoint / "trainer_state.json").read_text()) == first_state
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert history(client, first_id, "loss") == first_loss
    assert client.get_run(first_id).data.tags["nbexec.backup.location"] == str(location)
    assert (project / "mlartifacts" / first_id / "artifacts" / "config.yaml").is_file()

    out = ok(nbexec(*train, "--run-name", "second", "--resume", str(checkpoint), "--set", "training.epochs=2",
                    cwd=project))
    assert f"{backups / 'fresh' / 'second'} (" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("fresh").experiment_id])}
    assert set(runs) == {"first", "second"}
    second = runs["second"]
    assert second.data.tags["nbexec.resumed_from"] == str(checkpoint)
    second_loss = history(client, second.info.run_id, "loss")
    # the history goes on where it stopped: the resumed steps follow the first run's
    assert second_loss and second_loss[0][0] > first_loss[-1][0]
    state = json.loads((project / "outputs" / "second" / "checkpoint" / "trainer_state.json").read_text())
    assert state["epoch"] == 2
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["history"][0] == first_state["history"][0]  # the lineage of the weights is one line

    # by hand: back a run up, verify it; a restore over changed files is refused
    ok(nbexec("backup", "outputs/second", "--to", str(tmp_path / "other"), cwd=project))
    out = ok(nbexec("backup", "--verify", str(tmp_path / "other" / "fresh" / "second"), cwd=project))
    assert "verified" in out
    refused = nbexec("restore", str(location), cwd=project)
    assert refused.returncode == 4
    assert "mlflow.db" in refused.stderr and "--overwrite" in refused.stderr
