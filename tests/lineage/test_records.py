"""Lineage records without training: extraction with pieces missing, tags, the table views, ``nbexec lineage``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from nbexec.cli import main
from nbexec.lineage import Lineage, extract_lineage_from_best_model, lineage_from_tags, lineage_to_tags
from nbexec.lineage.record import (
    BackupLineage,
    CheckpointLineage,
    DataLineage,
    RunLineage,
    StudyLineage,
    TrialLineage,
)
from nbexec.render.lineage import render_lineage_html, render_lineage_text
from nbexec.result import RunStatus, TrainingResult

RUN_ID, TRIAL_RUN, STUDY_RUN = "a" * 32, "b" * 32, "c" * 32

FULL = Lineage(
    data=DataLineage(path="/data/ner", fingerprint="f" * 64),
    study=StudyLineage(name="hpo-x", storage="sqlite:////s/study.db", key_hash="1" * 64, trials_run=4,
                       best_value=0.25, objective="val_loss", direction="minimize", data_fingerprint="f" * 64,
                       mlflow_run_id=STUDY_RUN, mlflow_experiment_id="7"),
    best_trial=TrialLineage(number=2, params={"training.learning_rate": 0.0123, "model.layers": 2,
                                              "model.act": "<gelu>"}, key_hash="2" * 64, value=0.25,
                            mlflow_run_id=TRIAL_RUN),
    final_run=RunLineage(mlflow_run_id=RUN_ID, mlflow_experiment_id="7", run_name="final-1", run_dir="/o/final-1",
                         config_hash="3" * 16, git_commit="4" * 40, git_dirty=True, nbexec_version="0.1.0",
                         torch_version="2.13.0", hardware="2 CPUs"),
    checkpoint=CheckpointLineage(path="/o/final-1/checkpoint", bytes=1234, sha256="5" * 64,
                                 files={"model.pt": "6" * 64}),
    backup=BackupLineage(location="/backups/final-1", verified_at="2026-11-26T07:00:00Z", manifest="/b/m.json"),
    missing=("something: gone",),
)


def test_tags_round_trip_every_field_with_its_type() -> None:
    tags = lineage_to_tags(FULL)
    assert all(k.startswith("nbexec.lineage.") and isinstance(v, str) for k, v in tags.items())
    assert tags["nbexec.lineage.final_run.mlflow_run_id"] == RUN_ID  # text stays readable in the MLflow UI
    assert tags["nbexec.lineage.best_trial.number"] == "2"
    back = lineage_from_tags(tags)
    assert back == FULL
    assert isinstance(back.best_trial.number, int) and back.final_run.git_dirty is True
    assert lineage_from_tags({"mlflow.runName": "x"}) is None
    partial = Lineage(final_run=RunLineage(run_name="r"), missing=("study: none",))
    assert lineage_from_tags(lineage_to_tags(partial)) == partial


def test_json_round_trip(tmp_path: Path) -> None:
    path = FULL.write(tmp_path)
    assert path == tmp_path / "lineage.json"
    assert Lineage.read(tmp_path) == FULL == Lineage.from_dict(json.loads(path.read_text()))


def test_text_table_names_every_link() -> None:
    text = render_lineage_text(FULL)
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines] == ["data", "study", "best", "run", "config", "code", "hardware",
                                             "checkpoint", "backup", "missing"]
    assert f"[MLflow run {STUDY_RUN}]" in lines[1] and f"[MLflow run {TRIAL_RUN}]" in lines[2]
    assert "#2 value 0.25" in lines[2] and "training.learning_rate=0.0123" in lines[2]
    assert "git 444444444444 (uncommitted changes)" in text
    assert "/backups/final-1 (verified 2026-11-26T07:00:00Z)" in text
    assert str(FULL) == text


def test_html_links_run_ids_only_when_a_tracking_server_is_known() -> None:
    plain = render_lineage_html(FULL)
    assert "<a " not in plain and f"<code>{RUN_ID}</code>" in plain
    assert "&lt;gelu&gt;" in plain and "<gelu>" not in plain  # values are escaped
    linked = render_lineage_html(FULL, tracking_url="http://127.0.0.1:5000")
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{RUN_ID}?workflowType=machine_learning"' in linked
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{TRIAL_RUN}?workflowType=machine_learning"' in linked
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{STUDY_RUN}?workflowType=machine_learning"' in linked


def test_repr_html_uses_the_tracking_server_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbexec.tracking.store import reset_setup

    reset_setup()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000/")
    assert f'href="http://mlflow.example:5000/#/experiments/7/runs/{RUN_ID}?workflowType=machine_learning"' in FULL._repr_html_()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    assert "<a " not in FULL._repr_html_()


def fake_run_dir(root: Path, data: Path) -> Path:
    """A run directory as a finished job leaves it (result.json, config.yaml, checkpoint/)."""
    run_dir = root / "final-1"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "model.pt").write_bytes(b"weights")
    (run_dir / "config.yaml").write_text(f"data: {{path: {data}}}\n")
    now = time.time()
    TrainingResult(run_name="final-1", run_dir=run_dir, status=RunStatus.FINISHED, exit_code=0, started_at=now,
                   ended_at=now, nproc=2, backend="gloo", config_hash="9" * 16, command=("python",),
                   checkpoint=run_dir / "checkpoint", mlflow_run_id=RUN_ID).write()
    return run_dir


def test_extract_reports_what_is_missing_instead_of_failing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("x\n")
    run_dir = fake_run_dir(tmp_path, data)
    absent_study = tmp_path / "outputs" / "hpo" / "study.db"
    lineage = extract_lineage_from_best_model(run_dir, absent_study)
    assert not absent_study.exists()  # looking did not create an empty study file
    assert lineage.study is None and lineage.best_trial is None and lineage.backup is None
    assert lineage.final_run.mlflow_run_id == RUN_ID and lineage.final_run.config_hash == "9" * 16
    assert lineage.checkpoint.files.keys() == {"model.pt"}
    assert lineage.data.path == str(data) and lineage.data.fingerprint
    assert any(f"{absent_study} does not exist" in m for m in lineage.missing)
    assert any("code version and hardware" in m for m in lineage.missing)  # no lineage.json

    nothing = extract_lineage_from_best_model(tmp_path / "no-such-model", absent_study)
    assert nothing.final_run is None and nothing.checkpoint is None
    assert len(nothing.missing) >= 3


def test_nbexec_lineage_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    run_dir = fake_run_dir(tmp_path, data)
    assert main(["lineage", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data")
    assert re.search(rf"^run +final-1 \[MLflow run {RUN_ID}\]$", out, re.M)
    assert re.search(r"^missing +study: no study file given or recorded$", out, re.M)
    assert main(["lineage", str(run_dir / "checkpoint"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["final_run"]["run_name"] == "final-1" and record["version"] == 1
    assert main(["lineage", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_final_workflow_refuses_what_it_cannot_train_before_starting_anything(tmp_path: Path) -> None:
    import optuna

    from nbexec.errors import ConfigError
    from nbexec.workflow import run_final_training_workflow

    with pytest.raises(ConfigError, match="does not exist; run run_hpo") as info:
        run_final_training_workflow(tmp_path / "missing.db")
    assert info.value.field == "study_path" and not (tmp_path / "missing.db").exists()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="only-failures", storage=storage)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(ConfigError, match="no completed trial"):
        run_final_training_workflow(tmp_path / "study.db", output_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="trial 0 of study 'only-failures' did not complete"):
        run_final_training_workflow(tmp_path / "study.db", trial_number=0, output_dir=tmp_path / "out")
    optuna.create_study(study_name="second", storage=storage)
    with pytest.raises(ConfigError, match="holds 2 studies"):
        run_final_training_workflow(tmp_path / "study.db", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_optuna_a_sweep_says_how_to_install_it_and_extraction_lists_the_study_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from nbexec.errors import EnvironmentCheckError
    from nbexec.hpo import run_hpo

    (tmp_path / "study.db").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the nbexec[hpo] extra were not installed
    with pytest.raises(EnvironmentCheckError, match=r"pip install 'nbexec\[hpo\]'"):
        run_hpo(None, {"training.learning_rate": [0.01]}, 1, study_path=tmp_path / "study.db")
    lineage = extract_lineage_from_best_model(tmp_path / "nothing", tmp_path / "study.db")
    assert any("Optuna is not installed" in m for m in lineage.missing)
