"""backup_run with a study database, the import boundary, and `nbexec train --backup` exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbexec.backup import backup_run, restore, verify_backup
from nbexec.result import RunStatus, TrainingResult

from .conftest import make_checkpoint, same_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"


def finished_run(run_dir: Path) -> TrainingResult:
    make_checkpoint(run_dir / "checkpoint")
    (run_dir / "config.yaml").write_text("tracking: {experiment: hpo-final}\n")
    result = TrainingResult(run_name=run_dir.name, run_dir=run_dir, status=RunStatus.FINISHED, exit_code=0,
                            started_at=time.time() - 5, ended_at=time.time(), nproc=2, backend="gloo",
                            config_hash="0123456789abcdef", command=("torchrun",), checkpoint=run_dir / "checkpoint")
    result.write()
    return result


def test_a_run_and_its_study_are_backed_up_and_restored(tmp_path: Path) -> None:
    run_dir = tmp_path / "outputs" / "final-1"
    finished_run(run_dir)
    study = tmp_path / "outputs" / "hpo" / "study.db"
    study.parent.mkdir(parents=True)
    conn = sqlite3.connect(study)
    conn.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, value REAL)")
    conn.executemany("INSERT INTO trials (value) VALUES (?)", [(0.1 * i,) for i in range(50)])
    conn.commit()
    conn.close()

    record = backup_run(run_dir, tmp_path / "backups", study=study)
    location = tmp_path / "backups" / "hpo-final" / "final-1"  # the project is the run's experiment
    assert record.location == str(location) and record.verified
    assert "no MLflow store to back up (tracking was off, or its run could not be opened)" in record.notes
    manifest = verify_backup(location)
    assert manifest.components["study.db"] == {"source": str(study), "path": "hpo/study.db", "kind": "sqlite"}

    again = backup_run(run_dir, tmp_path / "backups", study=study)
    assert again.files_copied == 0  # an unchanged database is not copied again either

    study.unlink()
    (run_dir / "checkpoint" / "model.pt").unlink()
    restored = restore(location)
    assert restored.study_path == str(study)
    assert sqlite3.connect(study).execute("SELECT COUNT(*) FROM trials").fetchone() == (50,)
    assert restored.checkpoint == str(run_dir / "checkpoint")
    assert same_bytes(run_dir / "checkpoint" / "model.pt", location / "run" / "checkpoint" / "model.pt")


def test_importing_the_backup_api_stays_light(tmp_path: Path) -> None:
    code = ("import json, sys, nbexec\n"
            "for n in ('restore', 'immediate_backup_if_needed', 'verify_backup', 'BackupRecord', 'mount_drive'):"
            " getattr(nbexec, n)\n"
            "import nbexec.backup\n"
            "for n in nbexec.backup.__all__: getattr(nbexec.backup, n)\n"
            "import nbexec.backup.cli\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('torch', 'mlflow', 'IPython', 'ipywidgets', 'yaml', 'google'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.slow
def test_cli_exit_code_says_the_backup_failed_while_training_finished(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "nbexec").write_text("a file where the experiment's folder should go")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "nbexec", "train", "--entrypoint", str(FIXTURES / "ok.py"), "--nproc", "2",
         "--quiet", "--no-tracking", "--output", "outputs", "--run-name", "cli-1", "--backup", str(backups)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 4, proc.stderr
    assert "nbexec: cli-1 FINISHED" in proc.stdout
    assert "backup:     FAILED (cannot create the backup location" in proc.stderr
    assert TrainingResult.load(tmp_path / "outputs" / "cli-1").status is RunStatus.FINISHED

    # a target that cannot work is refused before anything starts (exit 3, no run dir)
    proc = subprocess.run(
        [sys.executable, "-m", "nbexec", "train", "--entrypoint", str(FIXTURES / "ok.py"), "--nproc", "2",
         "--quiet", "--no-tracking", "--output", "outputs", "--run-name", "cli-2", "--backup", "drive"],
        cwd=tmp_path, env={**env, "NBEXEC_COLAB_MARKER": str(tmp_path / "none")},
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 3 and "only be mounted on Colab" in proc.stderr
    assert not (tmp_path / "outputs" / "cli-2").exists()


def test_a_store_that_cannot_be_copied_says_the_checkpoint_is_safe(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from nbexec.backup import BackupWarning, engine
    from nbexec.backup.run_backup import RunBackup
    from nbexec.errors import BackupError

    result = finished_run(tmp_path / "outputs" / "final-2")
    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()

    def locked(source: object, dest: object) -> Path:
        raise BackupError(f"cannot take a consistent copy of the SQLite database {source}: database is locked")

    monkeypatch.setattr(engine, "snapshot_sqlite", locked)
    location = tmp_path / "backups" / "p" / "final-2"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amended = RunBackup(location, project="p", tracking_uri=f"sqlite:///{db}").finalize(result)
    assert amended.status is RunStatus.FINISHED
    error = amended.backup["error"]
    assert "database is locked" in error and "the run directory with its checkpoint was backed up and verified" in error
    assert [w for w in caught if issubclass(w.category, BackupWarning)]
    manifest = verify_backup(location)  # the first part is a complete, verified backup
    assert "run/checkpoint/model.pt" in manifest.files and "mlflow.db" not in manifest.components
