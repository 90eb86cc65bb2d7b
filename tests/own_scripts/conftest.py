"""Users' own training scripts under nbexec: real Hugging Face, accelerate, Lightning, tqdm, mlflow."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@pytest.fixture
def client(session_tracking_store: str):  # noqa: ANN201
    from mlflow.tracking import MlflowClient

    return MlflowClient(session_tracking_store)


@pytest.fixture
def experiment() -> str:
    """An experiment of the test's own, so 'exactly one run' counts only this test's runs."""
    return f"own-{uuid.uuid4().hex[:8]}"


def runs_in(client, name: str) -> list:  # noqa: ANN001
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def runs_under(client, run_id: str) -> list:  # noqa: ANN001
    """Runs nested under ``run_id``, in any experiment."""
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
