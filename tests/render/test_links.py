"""Pages of runs on an MLflow server: one builder for the summary, the lineage table, the run history and the setup."""

from __future__ import annotations

from nbexec.render.links import experiment_url, run_url, server_url
from nbexec.tracking.store import TrackingSetup


def test_only_an_http_server_has_pages() -> None:
    assert server_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert server_url("https://mlflow.example") == "https://mlflow.example"
    assert server_url("sqlite:////p/mlflow.db") is None and server_url(None) is None and server_url("") is None


def test_run_and_experiment_pages() -> None:
    assert experiment_url("http://h:5000", "7") == "http://h:5000/#/experiments/7"
    assert run_url("http://h:5000", "r1", "7") == "http://h:5000/#/experiments/7/runs/r1"
    assert run_url("http://h:5000", "r1") == "http://h:5000/#/runs/r1"


def test_the_tracking_setup_uses_the_same_pages() -> None:
    server = TrackingSetup("http://h:5000", "7", "ner", None, "http://h:5000/#/experiments/7")
    assert server.run_url("r1") == run_url("http://h:5000", "r1", "7")
    assert server.run_url("r1", "8") == "http://h:5000/#/experiments/8/runs/r1"
    local = TrackingSetup("sqlite:////p/mlflow.db", "7", "ner", None, "mlflow ui ...")
    assert local.run_url("r1") is None
