"""Opening a new SQLite store through nbexec prints none of MLflow's table-creation notes.

MLflow logs them from whichever thread first opens the store; in a notebook
that is often a background thread, and the lines land in an unrelated cell.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NOTE = "Creating initial MLflow database tables"

OPEN = """\
import sys
uri = "sqlite:///" + sys.argv[2]
if sys.argv[1] == "nbexec":
    from nbexec.tracking.store import get_client
    client = get_client(uri)
else:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
client.search_experiments()
import logging
logging.getLogger("mlflow.store.db.utils").warning("a warning still shows")
"""


def _open_fresh_store(how: str, tmp_path: Path) -> str:
    db = tmp_path / how / "mlflow.db"
    db.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", OPEN, how, str(db)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert db.is_file()
    return done.stderr


def test_a_new_store_opened_through_nbexec_prints_no_creation_notes(tmp_path: Path) -> None:
    assert NOTE in _open_fresh_store("mlflow", tmp_path)  # MLflow alone prints them
    quiet = _open_fresh_store("nbexec", tmp_path)
    assert NOTE not in quiet and "Updating database tables" not in quiet
    assert "a warning still shows" in quiet
