"""Consistent copies of SQLite databases (MLflow's ``mlflow.db``, Optuna's ``study.db``).

A plain file copy of a database that a process is writing can catch it
half-way through a transaction. SQLite's online backup API copies pages
under the database's own locking and restarts when a writer changes a page
it already copied, so the snapshot is always a consistent database. The
snapshot goes to local disk first (SQLite on Drive's FUSE mount corrupts and
locks); the backup then copies that file like any other.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nbexec.errors import BackupError

PAGES_PER_STEP = 256  # small steps: a writer waits at most one step for the lock
BUSY_TIMEOUT_S = 30.0


def snapshot_sqlite(source: str | Path, dest: str | Path) -> Path:
    """Write a consistent snapshot of the database ``source`` to ``dest``.

    Safe while other processes read and write ``source``. The snapshot is
    checked with ``PRAGMA integrity_check`` before it is returned.

    Returns:
        ``dest``.

    Raises:
        BackupError: ``source`` is not a readable SQLite database, or the
            snapshot does not pass the integrity check.
    """
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise BackupError(f"SQLite database {source} does not exist; nothing to back up")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        # read-only URI: the backup never creates or changes the source
        src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst, pages=PAGES_PER_STEP)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as err:
        dest.unlink(missing_ok=True)
        raise BackupError(f"cannot take a consistent copy of the SQLite database {source}: {err}") from err
    problem = integrity_problem(dest)
    if problem:
        dest.unlink(missing_ok=True)
        raise BackupError(f"the snapshot of {source} fails PRAGMA integrity_check: {problem}")
    return dest


def integrity_problem(path: str | Path) -> str | None:
    """What ``PRAGMA integrity_check`` reports for the database at ``path``, None when it is ``ok``."""
    try:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        return str(err)
    text = "; ".join(str(r[0]) for r in rows)
    return None if text == "ok" else text


__all__ = ["snapshot_sqlite", "integrity_problem"]
