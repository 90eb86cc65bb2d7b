"""Pages of runs on an MLflow server: one builder for the summary, the lineage table, the run history and the setup."""

from __future__ import annotations

from nbexec.render.links import experiment_url, register_ui, run_url, server_url, unregister_ui
from nbexec.tracking.store import TrackingSetup


def test_only_an_http_server_has_pages() -> None:
    assert server_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert server_url("https://mlflow.example") == "https://mlflow.example"
    assert server_url("sqlite:////p/mlflow.db") is None and server_url(None) is None and server_url("") is None


def test_run_and_experiment_pages_open_in_the_machine_learning_view() -> None:
    # MLflow 3's UI shows the GenAI views (traces, evaluations) unless the page asks for this one
    assert experiment_url("http://h:5000", "7") == "http://h:5000/#/experiments/7?workflowType=machine_learning"
    assert run_url("http://h:5000", "r1", "7") == "http://h:5000/#/experiments/7/runs/r1?workflowType=machine_learning"
    assert run_url("http://h:5000", "r1") == "http://h:5000/#/runs/r1?workflowType=machine_learning"


def test_the_tracking_setup_uses_the_same_pages() -> None:
    server = TrackingSetup("http://h:5000", "7", "ner", None, "http://h:5000/#/experiments/7")
    assert server.run_url("r1") == run_url("http://h:5000", "r1", "7")
    assert server.run_url("r1", "8") == "http://h:5000/#/experiments/8/runs/r1?workflowType=machine_learning"
    local = TrackingSetup("sqlite:////p/mlflow.db", "7", "ner", None, "mlflow ui ...")
    assert local.run_url("r1") is None


def test_a_local_store_has_pages_while_a_ui_serves_it() -> None:
    local = TrackingSetup("sqlite:////p/mlflow.db", "7", "ner", None, "mlflow ui ...")
    register_ui("sqlite:////p/mlflow.db", "http://127.0.0.1:5123/")
    try:
        assert server_url("sqlite:////p/mlflow.db") == "http://127.0.0.1:5123"
        assert server_url("sqlite:////other/mlflow.db") is None  # only the store it serves
        assert local.run_url("r1") == "http://127.0.0.1:5123/#/experiments/7/runs/r1?workflowType=machine_learning"
        assert local.where("r1").startswith("http://127.0.0.1:5123/")
    finally:
        unregister_ui("sqlite:////p/mlflow.db")
    assert local.run_url("r1") is None and local.where("r1").endswith("open with: mlflow ui ...")
