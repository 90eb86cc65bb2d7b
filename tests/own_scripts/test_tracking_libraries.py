"""One MLflow run per job, whatever the script logs with (Hugging Face, accelerate, Lightning, mlflow).

The ranks get the store, the experiment and the job's run id; the scripts are
unmodified: they log into the job's run as they would into a run they made.
After a cancel, no run a rank opened is left RUNNING.
"""

from __future__ import annotations

import pytest
from runner.conftest import wait_until

import nbexec
from nbexec.result import RunStatus

from .conftest import SCRIPTS, runs_in, runs_under

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

LAUNCH_WAIT_S = 600  # these jobs import transformers / lightning on each rank: a minute on a busy 2-core box


def launch(script: str, tmp_path, experiment: str, *args: str, **options):  # noqa: ANN001, ANN201
    return nbexec.launch(entrypoint=SCRIPTS / script, script_args=list(args), output_dir=tmp_path / "runs",
                         nproc=2, overrides=[f"tracking.experiment={experiment}"], **options)


def test_hf_trainer_logs_into_the_jobs_one_run(tmp_path, client, experiment):
    run = launch("hf_trainer.py", tmp_path, experiment, str(tmp_path / "hf_out"))
    result = run.result(timeout=LAUNCH_WAIT_S)

    runs = runs_in(client, experiment)
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id], "HF's MLflowCallback made a run of its own"
    assert runs_in(client, "Default") == [] or all(
        r.data.tags.get("mlflow.parentRunId") != result.mlflow_run_id for r in runs_in(client, "Default"))
    data = client.get_run(result.mlflow_run_id).data
    assert {"loss", "train_runtime", "eval_loss"} <= set(data.metrics), sorted(data.metrics)
    assert data.tags["nbexec.run_name"] == run.name and data.tags["nbexec.config_hash"]
    assert "learning_rate" in data.params  # HF's TrainingArguments
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    # evaluate() after train() logged into the same run (HF had ended it); the summary has it all
    assert {"loss", "eval_loss"} <= set(result.metrics)
    assert len(client.get_metric_history(result.mlflow_run_id, "loss")) >= 4  # logged every step


def test_hf_trainer_cancelled_leaves_no_run_running(tmp_path, client, experiment):
    holding = tmp_path / "hf_out" / "holding"
    run = launch("hf_trainer.py", tmp_path, experiment, str(tmp_path / "hf_out"), "--hold-at-step", "2")
    wait_until(lambda: holding.exists() or run.done(), LAUNCH_WAIT_S, "HF's Trainer to reach step 2")
    assert not run.done(), f"the job ended before it was cancelled: {run.outcome}"
    run.cancel()

    assert run.status is RunStatus.KILLED
    runs = runs_in(client, experiment)
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    assert runs[0].info.status == "KILLED"
    assert len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 1  # HF's live logging was in it


def test_accelerate_log_with_mlflow_logs_into_the_jobs_run(tmp_path, client, experiment):
    result = launch("accelerate_loop.py", tmp_path, experiment).result(timeout=LAUNCH_WAIT_S)

    runs = runs_in(client, experiment)
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]
    assert runs_in(client, "my-project") == []  # init_trackers' project name did not become an experiment
    history = client.get_metric_history(result.mlflow_run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    data = client.get_run(result.mlflow_run_id).data
    assert data.params["lr"] == "0.1" and data.tags["nbexec.run_name"] == result.run_name
    assert "train_loss" in result.metrics


def test_plain_mlflow_calls_stay_in_the_jobs_run(tmp_path, client, experiment):
    result = launch("mlflow_plain.py", tmp_path, experiment).result(timeout=LAUNCH_WAIT_S)

    runs = runs_in(client, experiment)
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id], "a start_run() made a second run"
    data = runs[0].data
    script_metrics = {k: v for k, v in data.metrics.items() if not k.startswith("system/")}  # nbexec's own
    assert script_metrics == {"inside_block": 1.0, "after_block": 2.0}
    assert data.params["from_script"] == "yes"
    assert runs[0].info.status == "FINISHED"
    assert result.metrics == {"inside_block": 1.0, "after_block": 2.0}


def test_a_nested_run_left_open_by_a_cancelled_rank_is_ended_with_the_job(tmp_path, client, experiment):
    holding = tmp_path / "holding"
    run = launch("mlflow_plain.py", tmp_path, experiment, "--hold", str(holding))
    wait_until(lambda: holding.exists() or run.done(), LAUNCH_WAIT_S, "the script to open its nested run")
    assert not run.done(), f"the job ended before it was cancelled: {run.outcome}"
    run.cancel()

    job_run = run.outcome.mlflow_run_id
    nested = runs_under(client, job_run)
    assert len(nested) == 1 and nested[0].data.metrics == {"nested_metric": 3.0}
    assert nested[0].info.status == "KILLED"
    assert client.get_run(job_run).info.status == "KILLED"


def test_lightning_logger_at_its_defaults_is_nested_under_the_jobs_run(tmp_path, client, experiment):
    pytest.importorskip("pytorch_lightning")
    result = launch("lightning_fit.py", tmp_path, experiment).result(timeout=LAUNCH_WAIT_S)

    assert [r.info.run_id for r in runs_in(client, experiment)] == [result.mlflow_run_id]
    nested = runs_under(client, result.mlflow_run_id)
    assert len(nested) == 1, "Lightning's own run is not linked to the job's"
    assert nested[0].info.status == "FINISHED" and "train_loss" in nested[0].data.metrics
    assert "train_loss" in result.metrics  # the summary shows what the job logged, wherever it went
