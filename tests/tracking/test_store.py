"""setup_mlflow: the embedded default store, resolution order, idempotence, stores that cannot be used."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from nbexec.config import load_config
from nbexec.errors import TrackingError
from nbexec.tracking import current_setup, setup_mlflow
from nbexec.tracking.store import EXPERIMENT_KIND_TAG, reset_setup, resolve_experiment

from .conftest import free_port


def experiments_in(uri: str) -> list[str]:
    """Experiment names, read from the SQLite file itself (not through nbexec)."""
    db = uri[len("sqlite:///") :]
    with sqlite3.connect(db) as conn:
        return sorted(row[0] for row in conn.execute("select name from experiments"))


def test_default_store_is_sqlite_in_the_project_dir(tmp_path: Path) -> None:
    project = Path.cwd()
    setup = setup_mlflow()
    assert setup.tracking_uri == f"sqlite:///{project / 'mlflow.db'}"
    assert (project / "mlflow.db").is_file()
    assert setup.experiment_name == "nbexec"
    assert setup.artifact_location == (project / "mlartifacts").as_uri()
    assert setup.ui_hint == "mlflow ui --backend-store-uri sqlite:///mlflow.db"  # as typed here: no absolute path
    assert not setup.is_remote and setup.run_url("abc") is None
    assert experiments_in(setup.tracking_uri) == ["Default", "nbexec"]


def test_setup_is_idempotent(store_uri: str) -> None:
    first = setup_mlflow(store_uri, "ner")
    again = [setup_mlflow(store_uri, "ner") for _ in range(3)]
    assert all(s is first for s in again)
    assert current_setup() is first
    assert experiments_in(store_uri) == ["Default", "ner"]
    # without arguments, an earlier setup is reused rather than the default store
    assert setup_mlflow() is first
    assert not (Path.cwd() / "mlflow.db").exists()


def test_an_existing_experiment_is_reused_across_processes_state(store_uri: str) -> None:
    first = setup_mlflow(store_uri, "ner")
    reset_setup()  # as a new kernel would
    second = setup_mlflow(store_uri, "ner")
    assert second is not first
    assert second == first
    assert experiments_in(store_uri) == ["Default", "ner"]


def test_uri_resolution_order(make_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    arg, env, cfg_uri = make_store("arg"), make_store("env"), make_store("cfg")
    config = load_config({"tracking": {"uri": cfg_uri}})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert setup_mlflow(arg, config=config).tracking_uri == arg
    assert setup_mlflow(config=config).tracking_uri == env
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert setup_mlflow(config=config).tracking_uri == cfg_uri
    reset_setup()
    default = setup_mlflow(config=load_config({}))
    assert default.tracking_uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def test_experiment_resolution_order(store_uri: str) -> None:
    config = load_config({"tracking": {"experiment": "from-config"}})
    assert setup_mlflow(store_uri, "explicit", config=config).experiment_name == "explicit"
    assert setup_mlflow(store_uri, config=config).experiment_name == "from-config"
    reset_setup()
    assert setup_mlflow(store_uri).experiment_name == "nbexec"
    assert experiments_in(store_uri) == ["Default", "explicit", "from-config", "nbexec"]


def test_a_run_never_inherits_the_experiment_of_an_earlier_one(store_uri: str) -> None:
    """`%train a.yaml --experiment ner` then `%train b.yaml`: the second goes to b.yaml's experiment."""
    assert setup_mlflow(store_uri, "ner", config=load_config({})).experiment_name == "ner"
    assert setup_mlflow(store_uri, config=load_config({})).experiment_name == "nbexec"  # the config's default
    assert resolve_experiment(config=load_config({"tracking": {"experiment": "mine"}})) == "mine"
    assert resolve_experiment(config=load_config({})) == "nbexec"
    # asking where things are, without a run's config, still answers with the current setup
    setup_mlflow(store_uri, "ner")
    assert setup_mlflow().experiment_name == "ner"


def test_experiments_are_marked_for_the_training_view(store_uri: str, client) -> None:  # noqa: ANN001
    """MLflow 3's UI shows an experiment as "Machine learning" (runs, charts) by its kind tag."""
    made = setup_mlflow(store_uri, "made-here")
    assert client.get_experiment(made.experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    untagged = client.create_experiment("made-elsewhere")
    setup_mlflow(store_uri, "made-elsewhere")
    assert client.get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    chosen = client.create_experiment("genai-by-choice", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    setup_mlflow(store_uri, "genai-by-choice")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a choice is kept


def test_relative_sqlite_uri_is_made_absolute() -> None:
    setup = setup_mlflow("sqlite:///sub/dir/runs.db")
    assert setup.tracking_uri == f"sqlite:///{Path.cwd() / 'sub' / 'dir' / 'runs.db'}"
    assert (Path.cwd() / "sub" / "dir" / "runs.db").is_file()
    assert setup.artifact_location == (Path.cwd() / "sub" / "dir" / "mlartifacts").as_uri()


def test_unreachable_server_raises_tracking_error() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as info:
        setup_mlflow(uri)
    message = str(info.value)
    assert uri in message
    assert "not reachable" in message and "mlflow server" in message
    assert current_setup() is None


def test_unreachable_server_from_env_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError, match="MLFLOW_TRACKING_URI"):
        setup_mlflow()


def test_sqlite_under_a_regular_file_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file, not a directory")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(TrackingError) as info:
        setup_mlflow(uri)
    assert uri in str(info.value)
    assert "writable" in str(info.value)


def test_sqlite_path_that_is_a_directory_raises(tmp_path: Path) -> None:
    (tmp_path / "db-dir").mkdir()
    with pytest.raises(TrackingError, match="not a writable file"):
        setup_mlflow(f"sqlite:///{tmp_path / 'db-dir'}")


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(TrackingError, match="in-memory"):
        setup_mlflow("sqlite:///:memory:")


def test_deleted_experiment_tells_how_to_restore(store_uri: str, client) -> None:  # noqa: ANN001
    setup = setup_mlflow(store_uri, "gone")
    client.delete_experiment(setup.experiment_id)
    reset_setup()
    with pytest.raises(TrackingError, match="mlflow experiments restore"):
        setup_mlflow(store_uri, "gone")


def test_deleted_database_is_created_again(store_uri: str) -> None:
    first = setup_mlflow(store_uri, "ner")
    db = Path(store_uri[len("sqlite:///") :])
    db.unlink()
    second = setup_mlflow(store_uri, "ner")
    assert db.is_file()
    assert experiments_in(store_uri) == ["Default", "ner"]
    assert second.experiment_id == first.experiment_id == "1"
