"""create_training_mlflow_run: the run exists before the job, params flattened and redacted, ends by how the block exits."""

from __future__ import annotations

import pytest

from nbexec.config import TrainingConfig, load_config
from nbexec.errors import RootCause, TrackingError, TrainingFailed
from nbexec.plan import LaunchPlan
from nbexec.redact import REDACTED
from nbexec.tracking import create_training_mlflow_run, current_setup, setup_mlflow

from .conftest import SECRET, free_port


def test_run_is_open_with_flattened_redacted_params(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                                    plan: LaunchPlan) -> None:
    setup_mlflow(store_uri, config=config)
    tracked = create_training_mlflow_run(config, plan=plan)
    run = client.get_run(tracked.run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "job-1"
    assert run.info.experiment_id == tracked.experiment_id == current_setup().experiment_id
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    params = run.data.params
    given = {
        "model.backbone": "tiny-encoder",
        "model.d_model": "32",
        "model.heads": "4",
        "training.learning_rate": "0.001",
        "training.epochs": "1",
        "training.batch_size": "8",
        "training.hf_token": REDACTED,
        "data.num_train": "64",
        "data.num_val": "16",
        "launch.nproc": "2",
        "launch.backend": plan.backend,
    }
    assert {k: params.get(k) for k in given} == given
    # what was not given is there too, as the trainer resolved it: the params say what ran
    assert params["model.layers"] == "2" and params["training.seed"] == "42" and params["data.seq_len"] == "32"
    assert "auto" not in (params["launch.nproc"], params["launch.backend"])
    assert run.data.tags["nbexec.status"] == "RUNNING"
    assert run.data.tags["nbexec.config_hash"] == config.config_hash
    assert SECRET not in repr(run.data)


def test_nested_and_list_values_and_long_values(store_uri: str, client) -> None:  # noqa: ANN001
    config = load_config({
        "training": {"epochs": 1, "curriculum": {"kind": "cosine", "warmup": {"steps": 10}}, "notes": "x" * 7000},
        "data": {"labels": ["O", "B-PER"], "odd name!": 1},
        "launch": {"nproc": 1},
    })
    tracked = create_training_mlflow_run(config, run_name="nested", tracking_uri=store_uri)
    params = client.get_run(tracked.run_id).data.params
    assert params["training.curriculum.kind"] == "cosine"
    assert params["training.curriculum.warmup.steps"] == "10"
    assert params["data.labels"] == '["O", "B-PER"]'
    assert params["data.odd name_"] == "1"
    assert len(params["training.notes"]) == 6000 and params["training.notes"].endswith("[truncated]")
    assert params["launch.nproc"] == "1"


def test_run_creation_sets_mlflow_up_itself(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    assert current_setup() is None
    tracked = create_training_mlflow_run(config, run_name="auto")
    assert tracked.tracking_uri == store_uri
    assert client.get_run(tracked.run_id).info.run_name == "auto"


def test_block_that_returns_ends_finished(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    with create_training_mlflow_run(config, run_name="ok", tracking_uri=store_uri) as tracked:
        assert client.get_run(tracked.run_id).info.status == "RUNNING"
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["nbexec.status"] == "FINISHED"
    assert "nbexec.failure" not in run.data.tags
    assert tracked.status.value == "FINISHED"


def test_block_that_raises_ends_failed_with_the_headline(store_uri: str, client,  # noqa: ANN001
                                                         config: TrainingConfig) -> None:
    with pytest.raises(ValueError):
        with create_training_mlflow_run(config, run_name="bad", tracking_uri=store_uri) as tracked:
            raise ValueError(f"bad shape (32, 4)\nsecond line with {SECRET}")
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["nbexec.failure"] == "ValueError: bad shape (32, 4)"
    assert "ValueError: bad shape (32, 4)" in run.data.tags["mlflow.note.content"]
    assert SECRET not in repr(run.data)


def test_training_failed_in_the_block_names_the_rank(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    error = TrainingFailed("job", RootCause(rank=1, exit_code=1, exc_type="RuntimeError", message="boom"))
    with pytest.raises(TrainingFailed):
        with create_training_mlflow_run(config, run_name="bad", tracking_uri=store_uri) as tracked:
            raise error
    tags = client.get_run(tracked.run_id).data.tags
    assert tags["nbexec.failure"] == "rank 1 failed (exit code 1): RuntimeError: boom"


def test_keyboard_interrupt_ends_killed(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    with pytest.raises(KeyboardInterrupt):
        with create_training_mlflow_run(config, run_name="stopped", tracking_uri=store_uri) as tracked:
            raise KeyboardInterrupt
    run = client.get_run(tracked.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["nbexec.status"] == "KILLED"
    assert "interrupted" in run.data.tags["nbexec.failure"]


def test_end_is_idempotent(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    tracked = create_training_mlflow_run(config, run_name="twice", tracking_uri=store_uri)
    tracked.end("KILLED", failure="stopped by the user")
    tracked.end("FINISHED")
    with tracked:
        pass
    run = client.get_run(tracked.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["nbexec.failure"] == "stopped by the user"


def test_no_run_when_the_server_is_down(config: TrainingConfig) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match="not reachable"):
        create_training_mlflow_run(config, run_name="never", tracking_uri=uri)


def test_run_in_the_experiment_of_the_parent(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    parent = create_training_mlflow_run(config, run_name="study", tracking_uri=store_uri, experiment="hpo")
    child = create_training_mlflow_run(config, run_name="trial", parent_run_id=parent.run_id)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.info.experiment_id == parent.experiment_id
