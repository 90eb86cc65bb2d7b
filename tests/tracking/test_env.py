"""setup_mlflow_tracking_env / with_tracking_env: the child logs into the parent's run; credentials are written nowhere."""

from __future__ import annotations

import pytest

from nbexec import contract
from nbexec.config import TrainingConfig
from nbexec.plan import LaunchPlan
from nbexec.redact import REDACTED
from nbexec.runner.handle import write_run_inputs
from nbexec.tracking import (
    TrackedRun,
    TrackingSetup,
    create_training_mlflow_run,
    setup_mlflow,
    setup_mlflow_tracking_env,
    with_tracking_env,
)

from .conftest import ENV_SECRET


def test_env_for_a_local_store(store_uri: str, config: TrainingConfig) -> None:
    tracked = create_training_mlflow_run(config, run_name="r", tracking_uri=store_uri)
    env = setup_mlflow_tracking_env(tracked, base_env={"PATH": "/bin"})
    assert env == {
        "MLFLOW_TRACKING_URI": store_uri,
        "MLFLOW_RUN_ID": tracked.run_id,
        "MLFLOW_EXPERIMENT_ID": tracked.experiment_id,
        "MLFLOW_EXPERIMENT_NAME": "tests",  # HF's Trainer and accelerate choose the experiment by name
    }
    assert tracked.env({}) == env


def test_env_from_a_run_id(store_uri: str, config: TrainingConfig) -> None:
    tracked = create_training_mlflow_run(config, run_name="r", tracking_uri=store_uri)
    env = setup_mlflow_tracking_env(tracked.run_id, base_env={})
    assert env["MLFLOW_RUN_ID"] == tracked.run_id
    assert env["MLFLOW_EXPERIMENT_ID"] == tracked.experiment_id
    assert env["MLFLOW_TRACKING_URI"] == setup_mlflow().tracking_uri == store_uri
    assert env["MLFLOW_EXPERIMENT_NAME"] == "tests"


def test_credentials_pass_through_and_a_remote_store_gets_short_retries() -> None:
    setup = TrackingSetup("https://mlflow.example.com", "7", "ner", None, "https://mlflow.example.com/#/experiments/7")
    tracked = TrackedRun(setup=setup, run_id="abc123", experiment_id="7")
    base = {
        "MLFLOW_TRACKING_USERNAME": "me",
        "MLFLOW_TRACKING_PASSWORD": ENV_SECRET,
        "MLFLOW_TRACKING_TOKEN": "",  # empty: not passed
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # the user's own setting wins
        "HOME": "/root",
    }
    assert setup_mlflow_tracking_env(tracked, base_env=base) == {
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
        "MLFLOW_RUN_ID": "abc123",
        "MLFLOW_EXPERIMENT_ID": "7",
        "MLFLOW_EXPERIMENT_NAME": "ner",
        "MLFLOW_TRACKING_USERNAME": "me",
        "MLFLOW_TRACKING_PASSWORD": ENV_SECRET,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }


def test_plan_with_tracking_env(store_uri: str, plan: LaunchPlan, monkeypatch: pytest.MonkeyPatch) -> None:
    tracked = create_training_mlflow_run(plan=plan, tracking_uri=store_uri)
    original_env = dict(plan.env)
    tracked_plan = with_tracking_env(plan, tracked)
    assert dict(plan.env) == original_env  # the plan given is not changed
    assert tracked_plan.env["MLFLOW_RUN_ID"] == tracked.run_id
    assert tracked_plan.env["MLFLOW_TRACKING_URI"] == store_uri
    assert tracked_plan.env["MLFLOW_TRACKING_PASSWORD"] == ENV_SECRET  # inherited, for the child
    assert "MLFLOW_TRACKING_PASSWORD" not in tracked_plan.env_set
    assert tracked_plan.argv == plan.argv and tracked_plan.run_dir == plan.run_dir
    recorded = tracked_plan.recorded_env()
    assert recorded["MLFLOW_RUN_ID"] == tracked.run_id
    assert recorded["MLFLOW_TRACKING_PASSWORD"] == REDACTED
    write_run_inputs(tracked_plan)
    command_txt = (tracked_plan.run_dir / contract.COMMAND_FILE).read_text()
    assert f"MLFLOW_RUN_ID={tracked.run_id}" in command_txt
    assert ENV_SECRET not in command_txt
