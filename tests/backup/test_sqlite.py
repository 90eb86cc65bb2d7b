"""SQLite online backup of mlflow.db while another process is writing to it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nbexec.backup import snapshot_sqlite
from nbexec.backup.sqlite import integrity_problem
from nbexec.errors import BackupError

from .conftest import wait_for

WRITER = Path(__file__).resolve().parent / "scripts" / "mlflow_writer.py"


def metric_rows(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    except sqlite3.OperationalError:  # tables not made yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_snapshot_of_mlflow_db_while_a_process_logs_metrics(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    run_id_file, stop = tmp_path / "run_id", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, str(WRITER), uri, str(run_id_file), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: run_id_file.exists() or writer.poll() is not None, "the writer's run", timeout=120)
        assert writer.poll() is None, writer.communicate()
        wait_for(lambda: metric_rows(db) >= 200, "the writer to log metrics", timeout=120)
        counts = []
        for i in range(3):  # each snapshot is taken while the writer keeps logging
            snap = snapshot_sqlite(db, tmp_path / "snapshots" / f"mlflow-{i}.db")
            assert writer.poll() is None, "the writer stopped before the snapshot was taken"
            assert integrity_problem(snap) is None
            conn = sqlite3.connect(snap)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # self-contained
            conn.close()
            # MLflow itself opens the copy and reads a consistent history: every step has all 20 metrics
            client = MlflowClient(tracking_uri=f"sqlite:///{snap}")
            history = client.get_metric_history(run_id_file.read_text(), "m1")
            steps = {m.step for m in history}
            assert steps == set(range(len(steps))) and len(steps) >= 10
            assert len(client.get_metric_history(run_id_file.read_text(), "m19")) == len(steps)
            counts.append(len(steps))
        assert counts == sorted(counts)
    finally:
        stop.write_text("stop")
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert metric_rows(db) >= counts[-1] * 20  # the writer went on after the snapshots


def test_snapshot_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        snapshot_sqlite(tmp_path / "missing.db", tmp_path / "out.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackupError, match=r"junk\.db"):
        snapshot_sqlite(junk, tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()
