"""--backup on a launched run: verified copy right after success, record in result/summary/MLflow tags,
a failed backup that leaves the training FINISHED, and targets refused before anything starts."""

from __future__ import annotations

import json
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexec.backup import BackupWarning, verify_backup
from nbexec.errors import BackupError, ConfigError
from nbexec.executor import launch
from nbexec.render.summary import RunSummary, render_summary_html, render_summary_text
from nbexec.result import RunStatus, TrainingResult

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
TINY: dict[str, Any] = {
    "model": {"backbone": "tiny-encoder", "d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 160, "num_val": 32, "seq_len": 16},
    "launch": {"nproc": 2},
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder as the working directory, with its own MLflow store (./mlflow.db)."""
    from nbexec.tracking.store import reset_setup

    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    reset_setup()
    yield root
    reset_setup()


def with_backup(target: Path | str, **sections: Any) -> dict[str, Any]:
    return {**TINY, **sections, "backup": {"enabled": True, "target": str(target)}}


@pytest.mark.slow
def test_a_finished_run_is_backed_up_and_says_so_everywhere(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    config = with_backup(project.parent / "backups", tracking={"experiment": "bk"})
    result = launch(config, output_dir="outputs", run_name="bk-1").result(timeout=240)
    assert result.status is RunStatus.FINISHED
    location = project.parent / "backups" / "bk" / "bk-1"
    b = result.backup
    assert b is not None and b["verified"] and b["location"] == str(location)
    assert b["source"] == str(project / "outputs" / "bk-1") and b["files_skipped"] == 0

    manifest = verify_backup(location)
    assert set(manifest.components) == {"run", "mlflow.db", "mlartifacts"}
    assert manifest.components["mlflow.db"] == {"source": str(project / "mlflow.db"), "path": "mlflow/mlflow.db",
                                                "kind": "sqlite"}
    assert {"run/checkpoint/model.pt", "run/checkpoint/optimizer.pt", "run/checkpoint/trainer_state.json",
            "run/config.yaml", "run/result.json", "run/logs/rank0.log", "mlflow/mlflow.db"} <= set(manifest.files)
    assert manifest.meta["mlflow_run_id"] == result.mlflow_run_id
    assert manifest.components["mlartifacts"]["path"] == f"mlflow/mlartifacts/{result.mlflow_run_id}"
    assert f"mlflow/mlartifacts/{result.mlflow_run_id}/artifacts/result.json" in manifest.files
    assert b["files_copied"] == len(manifest.files)
    # result.json holds the record too
    assert TrainingResult.load(result.run_dir).backup == b

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    tags = client.get_run(result.mlflow_run_id).data.tags
    assert tags["nbexec.backup.location"] == str(location)
    assert tags["nbexec.backup.verified_at"] == b["verified_at"]
    assert tags["nbexec.backup.manifest"] == str(location / "nbexec-backup.json")
    assert tags["nbexec.backup.status"] == "VERIFIED"
    # the store's copy is consistent and has the finished run, its metrics and the backup tags
    copy = MlflowClient(tracking_uri=f"sqlite:///{location / 'mlflow' / 'mlflow.db'}")
    copied = copy.get_run(result.mlflow_run_id)
    assert copied.info.status == "FINISHED"
    assert copied.data.tags["nbexec.backup.location"] == str(location)
    assert [m.value for m in copy.get_metric_history(result.mlflow_run_id, "loss")] == [
        m.value for m in client.get_metric_history(result.mlflow_run_id, "loss")]
    assert sqlite3.connect(location / "mlflow" / "mlflow.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)

    summary = RunSummary.from_result(result)
    text = render_summary_text(summary)
    assert f"  backup:     {location} (" in text and f"verified {b['verified_at']}" in text
    assert ("backup", f"{location} (verified {b['verified_at']})") in summary.lineage
    assert "backup" in render_summary_html(summary)


@pytest.mark.slow
def test_a_failed_backup_never_hides_a_finished_training(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    backups = project.parent / "backups"
    backups.mkdir()
    (backups / "blocked").write_text("a file where the experiment's backup folder should go")
    config = with_backup(backups, tracking={"experiment": "blocked"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = launch(config, output_dir="outputs", run_name="bk-2", entrypoint=FIXTURES / "ok.py")
        result = run.result(timeout=240)
    assert result.status is RunStatus.FINISHED and result.ok and run.exception() is None
    assert result.backup is not None and "error" in result.backup
    assert f"cannot create the backup location {backups / 'blocked' / 'bk-2'}" in result.backup["error"]
    assert result.backup["location"] == str(backups / "blocked" / "bk-2")
    backup_warnings = [w for w in caught if issubclass(w.category, BackupWarning)]
    assert backup_warnings and "FINISHED, but its backup" in str(backup_warnings[0].message)
    assert f"nbexec backup {result.run_dir}" in str(backup_warnings[0].message)
    assert TrainingResult.load(result.run_dir).status is RunStatus.FINISHED

    tags = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(result.mlflow_run_id).data.tags
    assert tags["nbexec.status"] == "FINISHED"
    assert tags["nbexec.backup.status"] == "FAILED" and tags["nbexec.backup.error"]
    text = render_summary_text(RunSummary.from_result(result))
    assert "  backup:     FAILED (" in text and "FINISHED" in text
    assert [row for row in RunSummary.from_result(result).lineage if row[0] == "backup"] == [("backup", "none")]


@pytest.mark.slow
def test_a_failed_training_is_not_backed_up(project: Path) -> None:
    config = with_backup(project.parent / "backups", tracking={"enabled": False})
    run = launch(config, output_dir="outputs", run_name="bk-3", entrypoint=FIXTURES / "fail_rank1.py")
    run.wait(240)
    result = TrainingResult.load(run.run_dir)
    assert result.status is RunStatus.FAILED
    assert result.backup is not None and "ended FAILED" in result.backup["skipped"]
    assert not (project.parent / "backups" / "nbexec" / "bk-3").exists()


def test_unusable_targets_stop_the_launch_before_anything_starts(project: Path) -> None:
    with pytest.raises(BackupError, match=r"only be mounted on Colab.*--backup PATH"):
        launch(with_backup("drive"), output_dir="outputs", run_name="never-1")
    (project / "not-a-folder").write_text("x")
    with pytest.raises(BackupError, match=r"cannot create the backup folder .*not-a-folder.*--backup off"):
        launch(with_backup(project / "not-a-folder" / "sub"), output_dir="outputs", run_name="never-2")
    with pytest.raises(ConfigError, match=r"backup\.target is not set.*--backup drive\|PATH") as info:
        launch({**TINY, "backup": {"enabled": True}}, output_dir="outputs", run_name="never-3")
    assert info.value.field == "backup.target"
    assert not (project / "outputs").exists()
    assert not (project / "mlflow.db").exists()  # no MLflow run was opened either


def test_drive_target_on_colab_mounts_before_the_launch(project: Path, fake_colab: Path, tmp_path: Path) -> None:
    from nbexec.backup.run_backup import run_backup_finalizer
    from nbexec.config import load_config
    from nbexec.plan import plan_training

    plan = plan_training(load_config(with_backup("drive", tracking={"experiment": "ner"})), run_name="r-1")
    backup = run_backup_finalizer(plan)
    assert backup is not None
    assert backup.location == tmp_path / "content" / "drive" / "MyDrive" / "nbexec" / "ner" / "r-1"
    assert [json.loads(x)["call"] for x in fake_colab.read_text().splitlines()] == ["mount"]
