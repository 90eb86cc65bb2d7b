"""run_hpo for real: an Optuna SQLite study whose trials are torchrun jobs (gloo, 2 ranks) tracked in MLflow."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import optuna
import pytest
from runner.conftest import wait_until

from nbexec.errors import ConfigError
from nbexec.hpo import run_hpo
from nbexec.hpo.keys import STUDY_KEY_ATTR, TRIAL_KEY_ATTR, compute_trial_key_hash

from .conftest import LR_SPACE, children, load_study, script_config

pytestmark = pytest.mark.slow


def test_four_trials_of_the_reference_trainer(project: Path, client, tiny) -> None:  # noqa: ANN001
    seen = []
    result = run_hpo(tiny(), LR_SPACE, 4, study_path="outputs/hpo/study.db", seed=0, on_trial=seen.append)

    study = load_study(project / "outputs/hpo/study.db")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [r.number for r in seen] == [0, 1, 2, 3] and result.ran == (0, 1, 2, 3)
    # each trial: its own run dir with the trainer's files, a checkpoint, and its params in its config
    for t in trials:
        run_dir = Path(t.user_attrs["nbexec.run_dir"])
        assert (run_dir / "checkpoint" / "model.pt").is_file()
        saved = json.loads((run_dir / "result.json").read_text())
        assert saved["status"] == "FINISHED" and saved["nproc"] == 2
        assert saved["metrics"]["val_loss"] == pytest.approx(t.value)
        assert f"learning_rate: {t.params['training.learning_rate']}" in (run_dir / "config.yaml").read_text()
        # intermediate values came from the trainer's events: one per epoch, at its global step
        assert len(t.intermediate_values) == 2
        assert t.intermediate_values[max(t.intermediate_values)] == pytest.approx(t.value)
        assert t.user_attrs[TRIAL_KEY_ATTR] == compute_trial_key_hash(study.user_attrs[STUDY_KEY_ATTR], t.params)
    assert len({t.params["training.learning_rate"] for t in trials}) == 4

    # MLflow: one study run with the 4 trials as its children, each with its params and objective
    study_run = client.get_run(result.mlflow_run_id)
    assert study_run.info.status == study_run.data.tags["nbexec.status"] == "FINISHED"
    assert study_run.info.run_name == result.study_name
    assert study_run.data.tags["nbexec.study_key_hash"] == result.study_key_hash
    kids = children(client, result.mlflow_run_id)
    assert len(kids) == 4
    by_id = {r.info.run_id: r for r in kids}
    assert set(by_id) == {t.user_attrs["nbexec.mlflow_run_id"] for t in trials}
    for t in trials:
        run = by_id[t.user_attrs["nbexec.mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["training.learning_rate"]) == pytest.approx(t.params["training.learning_rate"])
        assert run.data.metrics["hpo.objective"] == pytest.approx(t.value)
        assert run.data.tags["nbexec.hpo.trial_number"] == str(t.number)
        assert run.data.tags[TRIAL_KEY_ATTR] == t.user_attrs[TRIAL_KEY_ATTR]
        assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")] == pytest.approx(
            [t.intermediate_values[s] for s in sorted(t.intermediate_values)])

    # the best trial is the one with the best objective in MLflow
    best_in_mlflow = min(kids, key=lambda r: r.data.metrics["hpo.objective"])
    assert result.best is not None
    assert result.best.number == study.best_trial.number
    assert result.best.mlflow_run_id == best_in_mlflow.info.run_id
    assert study_run.data.tags["nbexec.hpo.best_run_id"] == best_in_mlflow.info.run_id
    assert study_run.data.metrics["hpo.best_value"] == pytest.approx(best_in_mlflow.data.metrics["hpo.objective"])

    # asking again for 4 trials runs nothing: the study already has them
    again = run_hpo(tiny(), LR_SPACE, 4, study_path="outputs/hpo/study.db", seed=0)
    assert again.ran == () and len(load_study(project / "outputs/hpo/study.db").trials) == 4
    assert len(children(client, result.mlflow_run_id)) == 4


def test_a_failing_trial_is_recorded_failed_and_the_sweep_goes_on(project: Path, client,  # noqa: ANN001
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_TRIAL", "1")
    result = run_hpo(script_config(), LR_SPACE, 3, study_path="study.db", seed=1)

    states = {t.number: t.state for t in result.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    failed = result.trials[1]
    assert "rank 1" in failed.failure and "trial 1 fails on purpose" in failed.failure
    assert failed.value is None
    assert result.best is not None and result.best.number in (0, 2)
    assert json.loads((Path(failed.run_dir) / "result.json").read_text())["status"] == "FAILED"
    runs = {r.data.tags["nbexec.hpo.trial_number"]: r for r in children(client, result.mlflow_run_id)}
    assert runs["1"].info.status == "FAILED"
    assert "trial 1 fails on purpose" in runs["1"].data.tags["nbexec.failure"]
    assert runs["1"].data.tags["nbexec.hpo.trial_state"] == "FAIL"
    assert runs["0"].info.status == runs["2"].info.status == "FINISHED"


def test_a_trial_whose_params_make_a_bad_config_fails_without_starting(project: Path, tiny) -> None:  # noqa: ANN001
    space = {"model.heads": [3]}  # d_model 16 is not divisible by 3
    result = run_hpo(tiny(), space, 1, study_path="study.db")
    (trial,) = result.trials
    assert trial.state == "FAIL"
    assert "ConfigError" in trial.failure and "model.d_model" in trial.failure
    assert not (project / f"{result.study_name}").exists() or not any(Path(project / result.study_name).iterdir())


def test_a_pruner_stops_a_trial_from_its_intermediate_values(project: Path, client,  # noqa: ANN001
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the trial waits after epoch 1 for a file nobody writes: only the pruner can end it early
    monkeypatch.setenv("HOLD_TRIAL", "0")
    monkeypatch.setenv("RELEASE_FILE", str(project / "never"))
    # every val_loss is above 0.5: the threshold pruner prunes at the first reported epoch
    pruner = optuna.pruners.ThresholdPruner(upper=0.5)
    result = run_hpo(script_config(epochs=3), LR_SPACE, 1, study_path="study.db", pruner=pruner)
    (trial,) = result.trials
    assert trial.state == "PRUNED"
    assert list(trial.intermediate) == [1]  # pruned after epoch 1 of 3
    saved = json.loads((Path(trial.run_dir) / "result.json").read_text())
    assert saved["status"] == "KILLED"  # the job was cancelled
    (run,) = children(client, result.mlflow_run_id)
    assert run.data.tags["nbexec.hpo.trial_state"] == "PRUNED"
    assert result.best is None


def test_a_trial_past_its_timeout_is_cancelled_and_failed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trial 0 waits for a file nobody writes: only the timeout can end it, however fast the
    # machine. The trial that must complete runs in a later session without a timeout, so
    # a slow machine cannot time it out too.
    monkeypatch.setenv("HOLD_TRIAL", "0")
    monkeypatch.setenv("RELEASE_FILE", str(project / "never"))
    config = script_config(epochs=2)
    config["tracking"] = {"enabled": False}

    held = run_hpo(config, LR_SPACE, 1, study_path="study.db", trial_timeout=4)
    timed_out = "timed out: the job was cancelled after 4 s (trial_timeout)"
    assert [(t.state, t.failure) for t in held.trials] == [("FAIL", timed_out)]
    assert json.loads((Path(held.trials[0].run_dir) / "result.json").read_text())["status"] == "KILLED"

    result = run_hpo(config, LR_SPACE, 2, study_path="study.db")
    assert [(t.state, t.failure) for t in result.trials] == [("FAIL", timed_out), ("COMPLETE", None)]


def test_untracked_sweep(project: Path) -> None:
    config = script_config(epochs=1)
    config["tracking"] = {"enabled": False}
    result = run_hpo(config, LR_SPACE, 1, study_path="study.db")
    assert result.mlflow_run_id is None
    assert result.trials[0].state == "COMPLETE" and result.trials[0].mlflow_run_id is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"direction": "down"}, "direction"),
        ({"objective": ""}, "objective"),
        ({"search_space": {"training.learning_rate": {"type": "float", "low": 1.0, "high": 0.1}}},
         "search_space.training.learning_rate.low"),
        ({"search_space": {"output.dir": ["a", "b"]}}, "search_space.output.dir"),
        ({"search_space": {"learning_rate": [0.1]}}, "search_space.learning_rate"),
        ({"search_space": {"training.lr": {"type": "uniform"}}}, "search_space.training.lr.type"),
    ],
)
def test_bad_arguments_are_config_errors_before_anything_starts(project: Path, kwargs: dict, field: str) -> None:
    args = {"search_space": LR_SPACE, "n_trials": 2, **kwargs}
    with pytest.raises(ConfigError) as info:
        run_hpo(script_config(), args.pop("search_space"), args.pop("n_trials"), study_path="study.db", **args)
    assert info.value.field == field
    assert not (project / "study.db").exists() or not load_study(project / "study.db").trials


def test_resuming_a_study_with_other_inputs_is_refused(project: Path) -> None:
    config = script_config(epochs=1)
    config["tracking"] = {"enabled": False}
    first = run_hpo(config, LR_SPACE, 1, study_path="study.db", study_name="mine")
    other_space = {"training.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}}
    with pytest.raises(ConfigError, match="was made for other inputs") as info:
        run_hpo(config, other_space, 2, study_path="study.db", study_name="mine")
    assert info.value.field == "study_name"
    assert len(load_study(project / "study.db").trials) == len(first.trials) == 1


def _waiting_for_a_flock() -> bool:
    """A thread of this process is blocked in ``flock`` (Linux: a ``-> FLOCK`` line with our pid in
    /proc/locks). With tracking off, the study lock is the only flock the sweep takes."""
    mine = str(os.getpid())
    return any(fields[1:3] == ["->", "FLOCK"] and fields[5] == mine
               for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines())
               if len(fields) > 5)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="sees the study lock's waiters in /proc/locks")
def test_two_workers_racing_for_the_last_trial_make_only_one(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two sweeps of one study, each in its own thread, both wanting 1 trial. A worker in
    # ask() waits there until the other one is in ask() too (no lock: both read the study
    # first, so both would add a trial) or is waiting for the study lock (the lock works).
    # Nothing is timed: each worker waits for what the other one does.
    config = script_config(epochs=1)
    config["tracking"] = {"enabled": False}
    real_ask = optuna.study.Study.ask
    asking: list[int] = []

    def ask_together(study, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        asking.append(threading.get_ident())
        wait_until(lambda: len(asking) == 2 or _waiting_for_a_flock(), 240,
                   "the other worker in ask() or at the study lock")
        return real_ask(study, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "ask", ask_together)
    optuna.storages.RDBStorage(f"sqlite:///{project / 'study.db'}")  # the tables exist before two writers race
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(run_hpo(config, LR_SPACE, 1, study_path="study.db", study_name="shared"))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)  # guards a hang only (pytest's own timeout is 300 s)
    assert not any(t.is_alive() for t in threads), "a worker never finished"

    assert errors == []
    assert len(load_study(project / "study.db").trials) == 1
    assert sorted(len(r.trials) for r in results) == [1, 1]  # both report the study's one trial


def test_a_stop_press_while_a_trial_is_picked_leaves_it_to_run_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = script_config(epochs=1)
    config["tracking"] = {"enabled": False}
    real_ask = optuna.study.Study.ask

    def ask_with_a_stop_press(study, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGINT)  # the notebook's stop button, while the trial is being picked
        return real_ask(study, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "ask", ask_with_a_stop_press)
    with pytest.raises(KeyboardInterrupt):
        run_hpo(config, LR_SPACE, 1, study_path="study.db")
    (trial,) = load_study(project / "study.db").trials
    assert trial.state == optuna.trial.TrialState.RUNNING and trial.user_attrs["nbexec.interrupted"] is True

    monkeypatch.setattr(optuna.study.Study, "ask", real_ask)
    again = run_hpo(config, LR_SPACE, 1, study_path="study.db")  # the same process, as a kernel would
    assert [(t.number, t.state) for t in again.trials] == [(0, "COMPLETE")]
