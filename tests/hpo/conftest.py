"""Fixtures for sweep tests: a fresh project dir, a real MLflow SQLite store, tiny configs."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexec.tracking.store import reset_setup

SCRIPTS = Path(__file__).resolve().parent / "scripts"
OBJECTIVE = SCRIPTS / "objective.py"
MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")

# The reference trainer at its smallest: a 2-rank trial of it takes ~5 s on 2 CPU cores.
TINY: dict[str, Any] = {
    "model": {"backbone": "tiny-encoder", "d_model": 16, "layers": 1, "heads": 2, "ff_dim": 32},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 2, "seed": 3, "log_every": 4},
    "data": {"num_train": 128, "num_val": 32, "seq_len": 16},
    "launch": {"nproc": 2},
    "tracking": {"experiment": "hpo-tests"},
}
LR_SPACE = {"training.learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}}


def script_config(epochs: int = 2) -> dict[str, Any]:
    """A sweep config whose trials run the fast stand-in trainer (tests/hpo/scripts/objective.py)."""
    return {
        "training": {"learning_rate": 1.0e-2, "epochs": epochs},
        "data": {"path": "data"},
        "launch": {"entrypoint": str(OBJECTIVE), "nproc": 2},
        "tracking": {"experiment": "hpo-tests"},
    }


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store; tests copy it (migrating one costs seconds)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("hpo-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def project(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory with its own MLflow store (``$MLFLOW_TRACKING_URI``), data dir and cache."""
    for name in MLFLOW_VARS:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.txt").write_text("the tiny dataset of the stand-in trainer\n")
    shutil.copyfile(template_db, root / "mlflow.db")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("NBEXEC_CACHE_DIR", str(tmp_path / "cache"))
    reset_setup()
    yield root
    reset_setup()


@pytest.fixture
def client(project: Path):  # noqa: ANN201 - MlflowClient, imported lazily
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def children(client: Any, parent_run_id: str) -> list[Any]:
    """The MLflow runs nested under ``parent_run_id``."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def load_study(path: Path) -> Any:
    import optuna

    storage = f"sqlite:///{path}"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture
def tiny() -> Callable[..., dict[str, Any]]:
    def make(**training: Any) -> dict[str, Any]:
        cfg = {k: dict(v) for k, v in TINY.items()}
        cfg["training"].update(training)
        return cfg

    return make
