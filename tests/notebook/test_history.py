"""Run history (read back from MLflow) and loss curves, without a job: a real SQLite store, made-up runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from nbexec.notebook.curves import loss_curve_png, loss_names, metric_series
from nbexec.notebook.history import (
    config_from_params,
    key_metrics,
    recent_runs,
    render_history_html,
    render_history_text,
    run_config,
)
from nbexec.render.links import register_ui, unregister_ui


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


def _run(client: mlflow.MlflowClient, exp: str, name: str, *, lr: str, status: str = "FINISHED",
         config: dict | None = None, parent: str | None = None) -> str:
    tags = {"mlflow.parentRunId": parent} if parent else {}
    run = client.create_run(exp, run_name=name, tags=tags)
    client.log_param(run.info.run_id, "training.learning_rate", lr)
    client.log_param(run.info.run_id, "model.backbone", "tiny-encoder")
    client.log_metric(run.info.run_id, "val_f1", 0.5)
    client.log_metric(run.info.run_id, "epoch", 2)
    if config is not None:
        client.log_text(run.info.run_id, yaml.safe_dump(config), "config.yaml")
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_recent_runs_newest_first_without_child_runs(store: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(store)
    exp = client.create_experiment("hist", artifact_location=str(tmp_path / "artifacts"))
    first = _run(client, exp, "first", lr="0.001")
    second = _run(client, exp, "second", lr="0.002", status="KILLED")
    _run(client, exp, "trial-0", lr="0.003", parent=second)

    rows = recent_runs(store, "hist")

    assert [r.run_id for r in rows] == [second, first]
    assert rows[0].status == "KILLED" and rows[0].duration_s is not None and rows[0].duration_s >= 0
    assert rows[1].params["training.learning_rate"] == "0.001"
    assert recent_runs(store, "no-such-experiment") == []
    text = render_history_text(rows)
    assert text.splitlines()[0].startswith("second KILLED backbone=tiny-encoder lr=0.002")
    assert "val_f1=0.5" in text and "epoch" not in text


def test_run_config_comes_from_the_artifact_else_from_the_params(store: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(store)
    exp = client.create_experiment("cfg", artifact_location=str(tmp_path / "artifacts"))
    saved = {"training": {"learning_rate": 0.004, "max_steps": 3}, "output": {"run_name": "old", "dir": "o"}}
    with_artifact = _run(client, exp, "a", lr="0.004", config=saved)
    without = _run(client, exp, "b", lr="0.005")

    assert run_config(store, with_artifact) == {"training": {"learning_rate": 0.004, "max_steps": 3},
                                                "output": {"run_name": None, "dir": "o"}}
    rebuilt = run_config(store, without)
    assert rebuilt["training"] == {"learning_rate": 0.005} and rebuilt["model"] == {"backbone": "tiny-encoder"}
    # MLflow stores str(1e-05) == "1e-05": read back as the config reads it (a float), not as a string
    assert config_from_params({"training.learning_rate": "1e-05"}) == {"training": {"learning_rate": 1e-05}}
    assert config_from_params({"a.b": "[1, 2]", "a.c": "x: y: z", "d": "true"}) == {
        "a": {"b": [1, 2], "c": "x: y: z"}, "d": True,
    }


def test_history_links_to_a_tracking_server_and_escapes_names() -> None:
    from nbexec.notebook.history import RunRow

    row = RunRow(run_id="abc123def4567890", name="<b>x</b>", status="FINISHED", start_time=0.0,
                 duration_s=12.0, experiment_id="7", params={}, metrics={})
    html = render_history_html([row], tracking_uri="http://127.0.0.1:5000/")
    assert 'href="http://127.0.0.1:5000/#/experiments/7/runs/abc123def4567890?workflowType=machine_learning"' in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "href" not in render_history_html([row], tracking_uri="sqlite:////tmp/m.db")
    # a local store's runs are links while a UI nbexec started serves it
    register_ui("sqlite:////tmp/m.db", "http://127.0.0.1:5999")
    try:
        assert 'href="http://127.0.0.1:5999/#/experiments/7/runs/abc123def4567890?' in render_history_html(
            [row], tracking_uri="sqlite:////tmp/m.db")
    finally:
        unregister_ui("sqlite:////tmp/m.db")
    assert key_metrics({"epoch": 1, "loss": 0.3, "val_f1": 0.9, "acc": 0.8, "lr": 1e-3}) == [
        ("val_f1", 0.9), ("loss", 0.3), ("acc", 0.8)
    ]


def test_loss_curve_from_rank_zero_metric_events() -> None:
    events = [
        {"kind": "metrics", "rank": 0, "step": 5, "metrics": {"loss": 1.0, "learning_rate": 0.1}},
        {"kind": "metrics", "rank": 1, "step": 5, "metrics": {"loss": 9.0}},  # another rank: not plotted
        {"kind": "progress", "rank": 0, "step": 5},
        {"kind": "metrics", "rank": 0, "step": 10, "metrics": {"loss": 0.5, "val_loss": 0.7, "ok": True}},
        {"kind": "metrics", "rank": 0, "metrics": {"loss": 0.25}},  # no step: after the previous point
    ]
    series = metric_series(events)
    assert series["loss"] == [(5.0, 1.0), (10.0, 0.5), (11.0, 0.25)]
    assert series["val_loss"] == [(10.0, 0.7)] and "ok" not in series
    assert loss_names(series) == ["loss", "val_loss"]
    png = loss_curve_png(series, title="run")
    assert png is not None and png.startswith(b"\x89PNG") and len(png) > 1000
    assert loss_curve_png(metric_series([{"kind": "metrics", "rank": 0, "metrics": {"acc": 1.0}}])) is None
