"""A secret in the config, the arguments and the environment is absent from everything the run stored."""

from __future__ import annotations

import pytest

from nbexec.config import TrainingConfig
from nbexec.errors import RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.tracking import create_training_mlflow_run, tracking_finalizer

from .conftest import ENV_SECRET, SECRET, finished_run_dir, stored_text


@pytest.mark.parametrize("status", [RunStatus.FINISHED, RunStatus.FAILED])
def test_no_secret_anywhere_in_the_run(status: RunStatus, store_uri: str, client,  # noqa: ANN001
                                       config: TrainingConfig, plan: LaunchPlan,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ENVIRONMENT_token_42")
    cause = RootCause(rank=0, exit_code=1, exc_type="PermissionError",
                      message=f"token {SECRET} refused", traceback=f"Traceback ...\nPermissionError: token {SECRET}")
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri, tags={"hub_token": SECRET})
    result = finished_run_dir(plan, status, root_cause=cause if status is RunStatus.FAILED else None)
    with (plan.log_dir / "rank1.log").open("a") as fh:
        fh.write("env says hf_ENVIRONMENT_token_42\n")
    amended = tracking_finalizer(tracked)(result)
    assert amended.mlflow_run_id == tracked.run_id

    everything = stored_text(client, tracked.run_id)
    assert "logs/rank0.log" in everything and "command.txt" in everything  # the scan saw the files
    assert "***REDACTED***" in everything
    for secret in (SECRET, ENV_SECRET, "hf_ENVIRONMENT_token_42"):
        assert secret not in everything
    # the run dir itself still has the plain log (the trainer wrote it); only MLflow's copy is scrubbed
    assert SECRET in (plan.log_dir / "rank0.log").read_text()
