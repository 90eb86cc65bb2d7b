"""The final-training workflow end to end: study -> final run -> backup -> lineage.json, MLflow tags, extraction."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nbexec.hpo import run_hpo
from nbexec.hpo.fingerprint import data_fingerprint
from nbexec.hpo.keys import compute_study_key_hash, compute_trial_key_hash
from nbexec.lineage import Lineage, extract_lineage_from_best_model, read_lineage_tags
from nbexec.workflow import BackupWarning, run_final_training_workflow

from .conftest import LR_SPACE, load_study

pytestmark = pytest.mark.slow


def test_final_workflow_links_data_study_trial_run_checkpoint_and_backup(
        project: Path, client, tiny) -> None:  # noqa: ANN001
    sweep = run_hpo(tiny(epochs=1), LR_SPACE, 2, study_path="outputs/hpo/study.db", seed=0)
    study_path = project / "outputs/hpo/study.db"
    final = run_final_training_workflow(study_path, backup_enabled=True, backup_target=str(project / "backups"))
    lineage = final.lineage
    study = load_study(study_path)
    best = study.best_trial
    result = final.result
    assert result.ok

    # data fingerprint -> study key hash
    data_dir = Path(lineage.data.path)
    assert data_dir.is_dir() and (data_dir / "train.jsonl").is_file()
    fp = data_fingerprint(data_dir).sha256
    assert lineage.data.fingerprint == fp == lineage.study.data_fingerprint == sweep.data_fingerprint
    key = compute_study_key_hash(backbone="tiny-encoder", data_fingerprint=fp, search_space=LR_SPACE,
                                 objective="val_loss", direction="minimize")
    assert lineage.study.key_hash == key == study.user_attrs["nbexec.study_key_hash"]
    assert (lineage.study.name, lineage.study.trials_run) == (sweep.study_name, 2)
    assert lineage.study.best_value == pytest.approx(best.value)
    assert lineage.study.mlflow_run_id == sweep.mlflow_run_id
    # -> best trial number and its run id
    assert lineage.best_trial.number == best.number == sweep.best.number
    assert lineage.best_trial.params == best.params
    assert lineage.best_trial.key_hash == compute_trial_key_hash(key, best.params)
    assert lineage.best_trial.mlflow_run_id == best.user_attrs["nbexec.mlflow_run_id"]
    assert client.get_run(lineage.best_trial.mlflow_run_id).data.tags["nbexec.hpo.trial_number"] == str(best.number)
    # -> the final run, trained with the best params
    assert lineage.final_run.mlflow_run_id == result.mlflow_run_id
    final_run = client.get_run(result.mlflow_run_id)
    assert final_run.info.status == "FINISHED"
    lr = best.params["training.learning_rate"]
    assert float(final_run.data.params["training.learning_rate"]) == pytest.approx(lr)
    assert lineage.final_run.config_hash == result.config_hash == final_run.data.tags["nbexec.config_hash"]
    assert lineage.final_run.nbexec_version and lineage.final_run.torch_version and lineage.final_run.hardware
    # -> checkpoint sha256, recomputed from the files
    ckpt = Path(lineage.checkpoint.path)
    assert ckpt == result.checkpoint
    files = {p.relative_to(ckpt).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(ckpt.rglob("*")) if p.is_file()}
    assert "model.pt" in files and lineage.checkpoint.files == files
    combined = hashlib.sha256("".join(f"{k}\0{files[k]}\n" for k in sorted(files)).encode()).hexdigest()
    assert lineage.checkpoint.sha256 == combined
    assert lineage.checkpoint.bytes == sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    # -> backup
    assert final.backup.status == "done"
    assert lineage.backup.location == final.backup.record["location"]
    assert lineage.backup.verified_at and Path(lineage.backup.manifest).is_file()
    # the layout is the backup's own; the checkpoint's best epoch (best/model.pt) is backed up too
    [backed_up] = [p for p in Path(lineage.backup.location).rglob("model.pt") if p.parent.name != "best"]
    assert hashlib.sha256(backed_up.read_bytes()).hexdigest() == files["model.pt"]
    assert lineage.missing == ()

    # lineage.json beside the checkpoint holds the same record
    assert final.lineage_path == result.run_dir / "lineage.json" == ckpt.parent / "lineage.json"
    assert Lineage.read(final.lineage_path) == lineage
    # rebuilt from the directory and the study file alone (either the run dir or its checkpoint dir)
    assert extract_lineage_from_best_model(result.run_dir, study_path) == lineage
    assert extract_lineage_from_best_model(ckpt, study_path) == lineage
    # the MLflow tags round-trip
    assert final_run.data.tags["nbexec.lineage.best_trial.number"] == str(best.number)
    assert final_run.data.tags["nbexec.lineage.checkpoint.sha256"] == combined
    assert read_lineage_tags(result.mlflow_run_id) == lineage
    # linked back: the best trial's and the study's runs name the final run; so does the study
    assert client.get_run(lineage.best_trial.mlflow_run_id).data.tags["nbexec.hpo.final_run_id"] == result.mlflow_run_id
    assert client.get_run(sweep.mlflow_run_id).data.tags["nbexec.hpo.final_run_id"] == result.mlflow_run_id
    assert load_study(study_path).user_attrs["nbexec.final_run"]["mlflow_run_id"] == result.mlflow_run_id


def test_without_a_backup_capability_the_result_says_backup_not_available(
        project: Path, tiny, no_backup_capability: None) -> None:  # noqa: ANN001
    with pytest.warns(BackupWarning, match="backup not available"):
        final = run_final_training_workflow(None, config=tiny(epochs=1), backup_enabled=True)
    assert final.result.ok and final.result.checkpoint is not None
    assert final.backup.status == "unavailable" and not final.backup.ok
    lineage = final.lineage
    assert lineage.backup is None and lineage.study is None and lineage.best_trial is None
    assert any(m.startswith("backup not available") for m in lineage.missing)
    assert any(m.startswith("study:") for m in lineage.missing)
    assert json.loads(final.lineage_path.read_text())["missing"] == list(lineage.missing)
    assert read_lineage_tags(final.result.mlflow_run_id) == lineage
    assert extract_lineage_from_best_model(final.result.run_dir) == lineage


def test_the_configs_backup_section_is_done_once_by_the_run_and_recorded_in_the_lineage(
        project: Path, tiny) -> None:  # noqa: ANN001
    pytest.importorskip("nbexec.backup")
    config = {**tiny(epochs=1), "backup": {"enabled": True, "target": str(project / "safe")}}
    final = run_final_training_workflow(None, config=config)
    record = final.result.backup
    assert final.result.ok and record and "error" not in record, record
    assert final.backup.status == "done" and final.backup.record["location"] == record["location"]
    assert final.lineage.backup is not None and final.lineage.backup.location == record["location"]
    assert Path(record["location"]).is_relative_to(project / "safe")
    assert len([p for p in (project / "safe").rglob("nbexec-backup.json")]) == 1  # one backup, not two
