"""The azureml scheduler offline: the job built from a config, its YAML round trip,
the errors without a workspace or credentials, submission through a stand-in
MLClient (Azure is the one part that cannot run here), and the job's entry
module running a real trainer process as AzureML would start it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbexec.cli import main as cli_main
from nbexec.errors import ConfigError, EnvironmentCheckError, TrainingCancelled
from nbexec.executor import launch, prepare
from nbexec.result import RunStatus

aml = pytest.importorskip("azure.ai.ml", reason="azure-ai-ml not installed (pip install 'nbexec[azureml]')")

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
AZURE_VARS = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME",
              "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")


@pytest.fixture(autouse=True)
def no_azure_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no cached az login either
    monkeypatch.chdir(tmp_path)


def _config(tmp_path: Path, **azureml: object) -> dict:
    (tmp_path / "data").mkdir(exist_ok=True)
    return {
        "training": {"lr": 0.5},
        "data": {"path": str(tmp_path / "data")},
        "launch": {"entrypoint": "train.py", "args": ["--epochs", "3"], "nproc": 4, "nnodes": 2,
                   "scheduler": "azureml", "env": {"FOO": "bar", "HF_TOKEN": "s3cret"},
                   "azureml": {"compute": "gpu-cluster", "environment": "azureml:nbexec-env:3", **azureml}},
        "output": {"dir": str(tmp_path / "runs"), "run_name": "az-1"},
        "tracking": {"experiment": "ner"},
    }


def _write_script(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")


def _check_job(job: object, tmp_path: Path) -> None:
    assert job.type == "command"
    assert job.compute == "gpu-cluster"
    assert job.environment in ("nbexec-env:3", "azureml:nbexec-env:3")  # the SDK drops the prefix
    assert job.resources.instance_count == 2
    assert job.distribution.process_count_per_instance == 4
    assert job.distribution.type == "pytorch"
    assert job.experiment_name == "ner" and job.display_name == "az-1"
    assert Path(job.code) == tmp_path
    assert job.command == (
        "python -m nbexec.schedulers.azureml.entry --run-name az-1 --config ${{inputs.config}} "
        "--data ${{inputs.data}} -- train.py --epochs 3"
    )
    assert job.inputs["data"].type == "uri_folder" and job.inputs["data"].path == str(tmp_path / "data")
    assert job.inputs["config"].path == str(tmp_path / "runs" / "azureml" / "az-1" / "config.yaml")
    assert job.environment_variables["FOO"] == "bar"
    assert job.environment_variables["MLFLOW_EXPERIMENT_NAME"] == "ner"
    assert "HF_TOKEN" not in job.environment_variables  # secrets never go into the job


def test_job_is_built_from_the_config(tmp_path: Path) -> None:
    from nbexec.schedulers.azureml.job import build_command_job

    _write_script(tmp_path)
    _check_job(build_command_job(prepare(_config(tmp_path))), tmp_path)


def test_dry_run_writes_yaml_that_round_trips_through_load_job(tmp_path: Path, capsys) -> None:
    _write_script(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps(_config(tmp_path)))
    assert cli_main(["train", str(tmp_path / "c.json"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "runs" / "azureml" / "az-1" / "job.yaml"
    assert f"job YAML written to {path}" in out
    assert "s3cret" not in out and "s3cret" not in path.read_text()
    assert "s3cret" not in (path.parent / "config.yaml").read_text()
    job = aml.load_job(path)
    _check_job(job, tmp_path)
    # and the job built in memory is the same job
    from nbexec.schedulers.azureml.job import build_command_job

    _check_job(build_command_job(prepare(_config(tmp_path)), config_file=path.parent / "config.yaml"), tmp_path)
    assert not (tmp_path / "runs" / "az-1").exists()  # a dry run starts nothing


def test_without_workspace_the_error_says_what_is_missing(tmp_path: Path) -> None:
    _write_script(tmp_path)
    with pytest.raises(EnvironmentCheckError) as caught:
        launch(_config(tmp_path))
    text = str(caught.value)
    for item in ("launch.azureml.subscription_id", "$AZURE_SUBSCRIPTION_ID", "resource_group", "workspace",
                 "--dry-run"):
        assert item in text
    assert not (tmp_path / "runs").exists()


def test_without_credentials_the_error_says_how_to_log_in(tmp_path: Path) -> None:
    pytest.importorskip("azure.identity")
    _write_script(tmp_path)
    config = _config(tmp_path, subscription_id="00000000-0000-0000-0000-000000000000",
                     resource_group="rg", workspace="ws")
    with pytest.raises(EnvironmentCheckError) as caught:
        launch(config)
    assert "no Azure credentials found" in str(caught.value) and "az login" in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_scheduler_is_not_the_torch_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare({"launch": {"scheduler": "nccl"}})
    assert "launch.scheduler" in str(caught.value) and "launch.backend is torch.distributed's" in str(caught.value)


class FakeJobs:
    """Stands in for ``MLClient.jobs`` (Azure cannot be reached from here)."""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.submitted: list[object] = []
        self.cancelled: list[str] = []

    def create_or_update(self, job: object) -> object:
        self.submitted.append(job)
        return SimpleNamespace(name="job-123", status="Queued", studio_url="https://studio/job-123")

    def get(self, name: str) -> object:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return SimpleNamespace(name=name, status=state)

    def begin_cancel(self, name: str) -> None:
        self.cancelled.append(name)
        self.states[:] = ["Canceled"]


def test_submission_goes_through_mlclient_and_follows_the_job(tmp_path: Path, monkeypatch) -> None:
    from nbexec.schedulers.azureml import run as az_run
    from nbexec.schedulers.azureml.run import submit_azureml

    monkeypatch.setattr(az_run, "POLL_S", 0.01)
    _write_script(tmp_path)
    client = SimpleNamespace(jobs=FakeJobs(["Running", "Running", "Completed"]))
    run = submit_azureml(prepare(_config(tmp_path)), client=client)
    _check_job(client.jobs.submitted[0], tmp_path)
    assert run.job_name == "job-123"
    assert run.result(timeout=10).status is RunStatus.FINISHED
    assert run.azureml_state == "Completed"

    client = SimpleNamespace(jobs=FakeJobs(["Running"]))
    run = submit_azureml(prepare({**_config(tmp_path), "output": {"dir": str(tmp_path / "r2")}}), client=client)
    run.cancel(grace=0)
    assert client.jobs.cancelled == ["job-123"] and run.status is RunStatus.KILLED
    with pytest.raises(TrainingCancelled):
        run.result()


def test_entry_runs_a_process_as_azureml_starts_it(tmp_path: Path) -> None:
    """One process with AzureML's variables: config from the input, run dir under ./outputs."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "config.yaml").write_text("training: {lr: 0.25}\ndata: {path: /not/mounted}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBEXEC_", "MLFLOW_"))}
    env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "nbexec.schedulers.azureml.entry", "--run-name", "az-2",
         "--config", str(tmp_path / "in" / "config.yaml"), "--data", str(tmp_path / "mnt"),
         "--", str(SCRIPTS / "report.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rank 0 of 1 done, config lr=0.25" in done.stdout
    run_dir = tmp_path / "outputs" / "az-2"
    assert (run_dir / "checkpoint" / "weights.txt").read_text() == "w"
    events = [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["metrics"]["loss"] for e in events if e["kind"] == "metrics"][-1] == pytest.approx(0.2)
    assert "path: " + str(tmp_path / "mnt") in (run_dir / "config.yaml").read_text()


def test_gpu_nodes_get_one_process_per_gpu_and_nccl(tmp_path: Path) -> None:
    from nbexec.schedulers.azureml.job import build_command_job

    plan = prepare({"launch": {"scheduler": "azureml", "azureml": {"compute": "a100s", "gpus_per_node": 8}},
                    "output": {"dir": str(tmp_path)}})
    assert plan.nproc == 8 and plan.backend == "nccl"
    job = build_command_job(plan)
    assert job.distribution.process_count_per_instance == 8
    assert job.environment_variables["NBEXEC_BACKEND"] == "nccl"
