"""An interrupted sweep resumes where it stopped: the sweep process is SIGKILLed mid-trial, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest

from nbexec.hpo import run_hpo

from .conftest import LR_SPACE, SCRIPTS, children, load_study, script_config

pytestmark = pytest.mark.slow


def wait_until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    """Poll an observable condition (not a sleep standing in for one) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_kill_after_two_trials_then_resume_runs_four_without_duplicates(project: Path, client,  # noqa: ANN001
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    release = project / "release"
    monkeypatch.setenv("HOLD_TRIAL", "2")  # trial 2 waits for `release` after its first epoch
    monkeypatch.setenv("RELEASE_FILE", str(release))
    study_path = project / "outputs" / "hpo" / "study.db"
    argv = [sys.executable, str(SCRIPTS / "sweep_driver.py"), json.dumps(script_config()), json.dumps(LR_SPACE),
            "4", str(study_path)]
    sweep = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        waiting = Path(f"{release}.waiting")
        wait_until(lambda: waiting.exists() or sweep.poll() is not None, 180, "trial 2 to start")
        assert sweep.poll() is None, sweep.stdout.read()
        worker = psutil.Process(int(waiting.read_text()))  # a rank of trial 2's job
        sweep.send_signal(signal.SIGKILL)  # no cleanup of any kind in the sweep process
        sweep.wait(30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    output = sweep.stdout.read()
    assert "trial 0 COMPLETE" in output and "trial 1 COMPLETE" in output and "trial 2" not in output
    # the job guard stops the job of a sweep that died
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 60, "trial 2's job to stop")

    study = load_study(study_path)
    before = {t.number: t for t in study.get_trials()}
    assert [before[n].state for n in sorted(before)] == [optuna.trial.TrialState.COMPLETE] * 2 + [
        optuna.trial.TrialState.RUNNING]
    dead_attempt = before[2].user_attrs["nbexec.mlflow_run_id"]
    study_run_id = study.user_attrs["nbexec.mlflow_run_id"]
    assert client.get_run(study_run_id).info.status == "RUNNING"  # nobody closed it

    release.write_text("go")
    result = run_hpo(script_config(), LR_SPACE, 4, study_path=study_path, seed=5)

    after = load_study(study_path).get_trials()
    assert [t.number for t in after] == [0, 1, 2, 3]
    assert [t.state for t in after] == [optuna.trial.TrialState.COMPLETE] * 4, [
        (t.number, t.state.name, t.user_attrs.get("nbexec.failure")) for t in after]
    assert result.ran == (2, 3)
    for number in (0, 1):  # finished trials are kept as they were
        assert after[number].params == before[number].params and after[number].value == before[number].value
    assert after[2].params == before[2].params  # the interrupted trial ran again with its own params
    assert after[2].user_attrs["nbexec.attempt"] == 2
    params = [t.params["training.learning_rate"] for t in after]
    assert len(set(params)) == 4
    assert len({t.user_attrs["nbexec.trial_key_hash"] for t in after}) == 4
    assert len({t.user_attrs["nbexec.run_dir"] for t in after}) == 4

    # MLflow: the same study run, closed now; the dead attempt KILLED, one FINISHED run per trial
    assert result.mlflow_run_id == study_run_id
    assert client.get_run(study_run_id).info.status == "FINISHED"
    runs = children(client, study_run_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["nbexec.hpo.trial_number"]) for r in finished) == [0, 1, 2, 3]
    assert {r.info.run_id for r in finished} == {t.user_attrs["nbexec.mlflow_run_id"] for t in after}
    killed = client.get_run(dead_attempt)
    assert killed.info.status == "KILLED"
    assert "runs again" in killed.data.tags["nbexec.failure"]
    assert len(runs) == 5
    assert os.path.isdir(after[2].user_attrs["nbexec.run_dir"])


def test_an_interrupt_cancels_the_trial_and_the_next_call_in_the_same_process_runs_it_again(
        project: Path, client, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """What a notebook's stop button does: KeyboardInterrupt in the sweep's thread, then the cell is run again."""
    release = project / "release"
    waiting = Path(f"{release}.waiting")
    monkeypatch.setenv("HOLD_TRIAL", "1")
    monkeypatch.setenv("RELEASE_FILE", str(release))

    def interrupt_when_trial_1_waits() -> None:
        wait_until(waiting.exists, 120, "trial 1 to start")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_trial_1_waits, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_hpo(script_config(), LR_SPACE, 2, study_path="study.db", seed=2)

    study = load_study(project / "study.db")
    first = study.get_trials()
    assert [t.state for t in first] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    assert first[1].user_attrs["nbexec.interrupted"] is True
    job = json.loads((Path(first[1].user_attrs["nbexec.run_dir"]) / "result.json").read_text())
    assert job["status"] == "KILLED"  # the trial's job was cancelled, not left running
    assert client.get_run(first[1].user_attrs["nbexec.mlflow_run_id"]).info.status == "KILLED"
    assert client.get_run(study.user_attrs["nbexec.mlflow_run_id"]).info.status == "KILLED"

    release.write_text("go")
    result = run_hpo(script_config(), LR_SPACE, 2, study_path="study.db", seed=2)
    assert result.ran == (1,)
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.trials[1].params == first[1].params
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
