"""create_training_child_run: nested runs for HPO trials."""

from __future__ import annotations

import pytest

from nbexec.config import TrainingConfig
from nbexec.errors import TrackingError
from nbexec.redact import REDACTED
from nbexec.tracking import create_training_child_run, create_training_mlflow_run

from .conftest import SECRET


def test_trial_is_nested_under_the_study_run(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    study = create_training_mlflow_run(config, run_name="study", tracking_uri=store_uri, experiment="hpo")
    trial_params = {"learning_rate": 0.01, "optimizer": {"name": "adam", "betas": [0.9, 0.99]}, "api_key": SECRET}
    with create_training_child_run(study.run_id, run_name="trial-0", params=trial_params,
                                   tags={"trial": 0}) as trial:
        run = client.get_run(trial.run_id)
        assert run.info.status == "RUNNING"
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "trial-0"
    assert run.info.experiment_id == study.experiment_id
    assert run.data.tags["mlflow.parentRunId"] == study.run_id
    assert run.data.tags["trial"] == "0"
    assert run.data.params == {
        "learning_rate": "0.01",
        "optimizer.name": "adam",
        "optimizer.betas": "[0.9, 0.99]",
        "api_key": REDACTED,
    }
    children = client.search_runs([study.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{study.run_id}'")
    assert [r.info.run_id for r in children] == [trial.run_id]


def test_trial_with_its_config_gets_the_training_params(store_uri: str, client,  # noqa: ANN001
                                                        config: TrainingConfig) -> None:
    study = create_training_mlflow_run(config, run_name="study", tracking_uri=store_uri)
    trial = create_training_child_run(study.run_id, run_name="trial-1", config=config, params={"trial": 1})
    params = client.get_run(trial.run_id).data.params
    assert params["training.learning_rate"] == "0.001"
    assert params["training.hf_token"] == REDACTED
    assert params["trial"] == "1"


def test_unknown_parent_is_a_tracking_error(store_uri: str, config: TrainingConfig) -> None:
    create_training_mlflow_run(config, run_name="study", tracking_uri=store_uri)
    with pytest.raises(TrackingError, match="parent run 0000"):
        create_training_child_run("0000aaaa0000aaaa0000aaaa0000aaaa", run_name="orphan")
