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

import pytest
from runner.conftest import wait_until

from azureml import fake_azure as fake_azure_mod  # tests/ is on sys.path (rootdir packages)
from nbexec.cli import main as cli_main
from nbexec.errors import ConfigError, EnvironmentCheckError, TrainingCancelled, TrainingFailed
from nbexec.executor import launch, prepare
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink

aml = pytest.importorskip("azure.ai.ml", reason="azure-ai-ml not installed (pip install 'nbexec[azureml]')")

TESTS = Path(__file__).resolve().parent.parent
SCRIPTS = TESTS / "fixtures" / "scripts"
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


class Recorder(Sink):
    """Keeps what the sinks get, in order, across calls."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.started: object = None
        self.lines: list[object] = []
        self.ended: object = None

    def on_start(self, run: object) -> None:
        self.started = run

    def on_lines(self, lines) -> None:
        self.lines.extend(lines)

    def on_end(self, result) -> None:
        self.order.append("on_end")
        self.ended = result

    def texts(self, rank: int | None = 0) -> list[str]:
        return [ln.text for ln in self.lines if ln.rank == rank]


@pytest.fixture
def fake_azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The stand-in MLClient, for this process and for the log streamer child."""
    from nbexec.schedulers.azureml import submit as az_run
    from nbexec.schedulers.azureml.client import TEST_CLIENT_VAR

    folder = tmp_path / "azure"
    folder.mkdir()
    monkeypatch.setenv(fake_azure_mod.FOLDER_VAR, str(folder))
    monkeypatch.setenv(TEST_CLIENT_VAR, "azureml.fake_azure:make_client")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(az_run, "POLL_S", 0.05)
    return fake_azure_mod.make_client()


def _mlflow_status(run_id: str) -> str:
    from nbexec.tracking.store import get_client

    return get_client(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status


def _submit(tmp_path: Path, client: object, order: list[str], *extra_finalizers, views=()):  # noqa: ANN001, ANN202
    """Submit with a real MLflow run (SQLite) ended by its finalizer, and a recording sink."""
    from nbexec.schedulers.azureml.submit import submit_azureml
    from nbexec.tracking import create_training_mlflow_run, tracking_finalizer

    plan = prepare(_config(tmp_path))
    views = [view(plan) for view in views]
    tracked = create_training_mlflow_run(plan=plan)
    seen: list[object] = []

    def record(result):  # noqa: ANN001, ANN202
        order.append("finalize")
        seen.append(result)
        return result

    sink = Recorder(order)
    run = submit_azureml(plan, sinks=[sink, *views], finalizers=[tracking_finalizer(tracked), *extra_finalizers, record],
                         client=client)
    return run, sink, tracked, seen


def test_completed_job_streams_lines_runs_finalizers_then_on_end(tmp_path: Path, fake_azure) -> None:
    _write_script(tmp_path)
    order: list[str] = []

    def broken_backup(result):  # noqa: ANN001, ANN202
        raise RuntimeError("backup target is gone")

    from nbexec.notebook.live import LiveRunView

    published: list[dict] = []
    run, sink, tracked, seen = _submit(tmp_path, fake_azure, order, broken_backup,
                                       views=[lambda plan: LiveRunView(plan, publish=published.append)])
    _check_job(fake_azure.jobs.submitted[0], tmp_path)
    assert run.job_id == "job-123" and run.job.studio_url == "https://studio/job-123"
    assert run.status is RunStatus.RUNNING
    wait_until(lambda: sink.started is run, 120, "on_start")
    # the streamer child builds its client through the test hook; nothing secret on its command line
    assert run.job.streamer.args[3:6] == ["--job", "job-123", "--log-dir"] and "s3cret" not in str(run.job.streamer.args)

    fake_azure.jobs.set_state("Running")
    fake_azure.jobs.remote_print("epoch 1 loss 0.50", "epoch 2 loss 0.25")
    wait_until(lambda: [ln.text for ln in run.lines(0)] == ["epoch 1 loss 0.50", "epoch 2 loss 0.25"], 30,
               "rank 0's lines in lines()")
    wait_until(lambda: sink.texts(0) == ["epoch 1 loss 0.50", "epoch 2 loss 0.25"], 120, "lines in the sink")
    wait_until(lambda: run.scheduler_state == "Running", 120, "the Running state")
    wait_until(lambda: any("[rank0] epoch 2 loss 0.25" in b["text/plain"] and "RUNNING" in b["text/plain"]
                           for b in list(published)), 120, "the live view showing the lines")
    assert run.status is RunStatus.RUNNING and not run.done() and order == []

    fake_azure.jobs.remote_print("training done")
    fake_azure.jobs.set_state("Completed")
    assert run.wait(timeout=120) is RunStatus.FINISHED
    result = run.result()
    assert run.scheduler_state == "Completed"
    assert [ln.text for ln in run.lines(0, 1)] == ["training done"]  # the last lines, after the job was over
    launcher = [ln.text for ln in run.lines(None)]
    assert "RunId: job-123" in launcher and "Execution Summary" in launcher
    assert "Web View: https://studio/job-123" in launcher
    assert not any("rank 1 line" in t for t in [*launcher, *sink.texts(0)])  # the SDK streams rank 0's file
    assert "training done" in (run.run_dir / "logs" / "rank0.log").read_text()
    assert result.log_paths["rank0"] == run.run_dir / "logs" / "rank0.log"
    # finalizers once, in order, then on_end with the final result; the broken one is a line, not a loss
    assert order == ["finalize", "on_end"] and len(seen) == 1
    assert seen[0].status is RunStatus.FINISHED and seen[0].mlflow_run_id == tracked.run_id
    assert sink.ended is result and result.mlflow_run_id == tracked.run_id
    assert "nbexec: backup target is gone" in sink.texts(None)
    assert _mlflow_status(tracked.run_id) == "FINISHED"
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == "FINISHED"
    assert run.job.streamer.poll() is not None
    # the notebook's live view ends with the summary
    assert published[-1]["text/plain"].startswith("nbexec: az-1 FINISHED in ")


def test_failed_job_reports_rank0_traceback_and_ends_mlflow_failed(tmp_path: Path, fake_azure) -> None:
    _write_script(tmp_path)
    order: list[str] = []
    run, sink, tracked, seen = _submit(tmp_path, fake_azure, order)
    fake_azure.jobs.set_state("Running")
    fake_azure.jobs.remote_print("epoch 1 loss 0.50", "Traceback (most recent call last):",
                                 '  File "train.py", line 3, in <module>', "ValueError: batch 7 is empty")
    wait_until(lambda: "ValueError: batch 7 is empty" in sink.texts(0), 30, "the traceback in the sink")
    assert run.status is RunStatus.RUNNING
    fake_azure.jobs.set_state("Failed")
    assert run.wait(timeout=120) is RunStatus.FAILED
    with pytest.raises(TrainingFailed) as caught:
        run.result()
    cause = caught.value.root_cause
    assert cause.rank == 0 and cause.exc_type == "ValueError"
    assert cause.message == "batch 7 is empty; see https://studio/job-123"
    # AzureML reports no exit code: the headline does not invent one
    assert cause.headline() == "rank 0 failed: ValueError: batch 7 is empty; see https://studio/job-123"
    assert 'File "train.py"' in cause.traceback
    assert "ValueError: batch 7 is empty" in caught.value.log_tail
    assert any(ln.text.startswith("AzureML: Exception") for ln in run.lines(None, 20))  # AzureML's error, streamed
    assert order == ["finalize", "on_end"] and seen[0].status is RunStatus.FAILED
    assert _mlflow_status(tracked.run_id) == "FAILED"


def test_a_status_azure_never_answers_ends_the_run_failed_with_why(tmp_path: Path, fake_azure,
                                                                     monkeypatch) -> None:
    from nbexec.schedulers.azureml import submit as az_run

    monkeypatch.setattr(az_run, "MAX_POLL_ERRORS", 3)
    monkeypatch.setattr(az_run, "STREAM_DRAIN_S", 0.5)  # the streamer (its own client) would go on
    _write_script(tmp_path)
    order: list[str] = []
    run, sink, tracked, seen = _submit(tmp_path, fake_azure, order)
    fake_azure.jobs.set_state("Running")
    calls = []

    def unreachable(name: str) -> object:
        calls.append(name)
        raise ConnectionError("workspace unreachable")

    monkeypatch.setattr(fake_azure.jobs, "get", unreachable)
    assert run.wait(timeout=120) is RunStatus.FAILED
    assert len(calls) == 3
    cause = run.exception().root_cause
    assert "could not read the job's status 3 times: workspace unreachable" in cause.message
    assert order == ["finalize", "on_end"] and _mlflow_status(tracked.run_id) == "FAILED"
    assert run.job.streamer.poll() is not None  # stopped once the drain time was up


def test_cancel_ends_the_job_killed(tmp_path: Path, fake_azure) -> None:
    _write_script(tmp_path)
    order: list[str] = []
    run, sink, tracked, seen = _submit(tmp_path, fake_azure, order)
    fake_azure.jobs.set_state("Running")
    fake_azure.jobs.remote_print("epoch 1 loss 0.50")
    wait_until(lambda: sink.texts(0) == ["epoch 1 loss 0.50"], 30, "the first line")
    run.cancel(grace=0)
    assert fake_azure.jobs.cancelled == ["job-123"] and run.status is RunStatus.KILLED
    assert run.scheduler_state == "Canceled"
    with pytest.raises(TrainingCancelled):
        run.result()
    assert order == ["finalize", "on_end"] and sink.ended.status is RunStatus.KILLED
    assert _mlflow_status(tracked.run_id) == "KILLED"
    assert run.job.streamer.poll() is not None  # the streamer is gone too
    run.cancel()  # idempotent


def test_a_streamer_that_dies_is_restarted_without_repeating_lines(tmp_path: Path, fake_azure,
                                                                   monkeypatch) -> None:
    from nbexec.schedulers.azureml import submit as az_run

    monkeypatch.setattr(az_run, "STREAM_RESTART_DELAY_S", 0.05)
    _write_script(tmp_path)
    (fake_azure.jobs.folder / "fail_stream_once").touch()
    run, sink, tracked, seen = _submit(tmp_path, fake_azure, [])
    fake_azure.jobs.set_state("Running")
    fake_azure.jobs.remote_print("epoch 1", "epoch 2")
    wait_until(lambda: any("restarting the log streamer (1/" in ln.text for ln in run.lines(None)), 30,
               "the restart")
    assert any("log streaming stopped: ConnectionError('network blip')" in ln.text for ln in run.lines(None))
    fake_azure.jobs.remote_print("epoch 3")
    wait_until(lambda: sink.texts(0)[-1:] == ["epoch 3"], 30, "a line after the restart")
    fake_azure.jobs.set_state("Completed")
    assert run.wait(timeout=120) is RunStatus.FINISHED
    assert [ln.text for ln in run.lines(0)] == ["epoch 1", "epoch 2", "epoch 3"]
    assert sink.texts(0) == ["epoch 1", "epoch 2", "epoch 3"]


def test_the_streamer_exits_when_the_submitter_closes_its_stdin(tmp_path: Path, fake_azure) -> None:
    """A kernel that dies closes the pipe too: no streamer outlives its submitter."""
    from nbexec.schedulers.azureml.submit import _start_streamer

    _write_script(tmp_path)
    plan = prepare(_config(tmp_path))
    plan.log_dir.mkdir(parents=True)
    fake_azure.jobs.create_or_update(None)
    fake_azure.jobs.set_state("Running")
    fake_azure.jobs.remote_print("epoch 1")
    proc = _start_streamer(plan, "job-123", tmp_path / "stream.log")
    try:
        wait_until(lambda: (plan.log_dir / "rank0.log").is_file()
                   and (plan.log_dir / "rank0.log").read_text() == "epoch 1\n", 30, "the streamed line")
        assert proc.poll() is None  # the job still runs: it keeps streaming
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_section_router_splits_the_sdk_output_by_log_file(tmp_path: Path) -> None:
    from nbexec.schedulers.azureml.stream import SectionRouter, rank_of

    assert (rank_of("user_logs/std_log_process_3.txt"), rank_of("user_logs/std_log.txt")) == (3, 0)
    assert rank_of("azureml-logs/55_azureml-execution.txt") is None
    router = SectionRouter(tmp_path / "logs")
    router.write("RunId: j\n\nStreaming user_logs/std_log_process_0.txt\n")
    router.write("=" * 40 + "\n\nhello\n\nwor")
    router.write("ld\n\nExecution Summary\n=================\n")
    router.close()
    assert (tmp_path / "logs" / "rank0.log").read_text() == "hello\n\nworld\n"
    launcher = (tmp_path / "logs" / "launcher.log").read_text().splitlines()
    assert launcher == ["RunId: j", "", "Streaming user_logs/std_log_process_0.txt", "", "Execution Summary",
                        "================="]


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
