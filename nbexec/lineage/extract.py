"""Build a lineage record from files alone: a model directory and a study file.

What can be recomputed is (checkpoint hashes from its bytes, data
fingerprint from the dataset, the study and trial from the study file, the
run from ``result.json``); what cannot (the code version and hardware the
run had, the backup) comes from the ``lineage.json`` written at training
time. Whatever is absent is listed in ``missing`` instead of raising.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.lineage.record import (
    BackupLineage,
    CheckpointLineage,
    DataLineage,
    Lineage,
    RunLineage,
    StudyLineage,
    TrialLineage,
    checkpoint_lineage,
)


def extract_lineage_from_best_model(
    best_model_path: str | os.PathLike[str],
    hpo_study_path: str | os.PathLike[str] | None = None,
    *,
    study_name: str | None = None,
) -> Lineage:
    """Rebuild the lineage of a trained model from its directory and the HPO study file.

    Args:
        best_model_path: the final run's directory, or its ``checkpoint/`` directory.
        hpo_study_path: the study's SQLite file (``outputs/hpo/study.db``); None: the
            one ``lineage.json`` names, if any.
        study_name: which study in the file (default: the one ``lineage.json`` names,
            else the file's only study).

    Returns:
        The :class:`Lineage`; pieces that could not be found are None and listed in ``missing``.
    """
    run_dir, checkpoint_dir = locate(Path(best_model_path))
    missing: list[str] = []
    recorded = _recorded(run_dir, missing)
    if hpo_study_path is None and recorded is not None and recorded.study is not None and recorded.study.storage:
        hpo_study_path = _sqlite_file(recorded.study.storage)
    if study_name is None and recorded is not None and recorded.study is not None:
        study_name = recorded.study.name
    trial_number = recorded.best_trial.number if recorded is not None and recorded.best_trial else None
    if recorded is not None:  # a backup that did not happen cannot be seen from the files
        missing += [item for item in recorded.missing if item.startswith("backup")]
    return build_lineage(
        run_dir=run_dir, checkpoint_dir=checkpoint_dir, study_path=hpo_study_path, study_name=study_name,
        trial_number=trial_number,
        run_facts=recorded.final_run if recorded is not None else None,
        backup=recorded.backup if recorded is not None else None,
        recorded_data=recorded.data if recorded is not None else None,
        missing=missing,
    )


def build_lineage(
    *,
    run_dir: Path | None,
    checkpoint_dir: Path | None,
    study_path: str | os.PathLike[str] | None,
    study_name: str | None = None,
    trial_number: int | None = None,
    run_facts: RunLineage | None = None,
    backup: BackupLineage | None = None,
    recorded_data: DataLineage | None = None,
    missing: list[str] | None = None,
) -> Lineage:
    """The record from files, plus the facts only the training session knew (``run_facts``, ``backup``).

    ``trial_number`` is the trial the run trained with (default: the study's best).
    """
    missing = list(missing or [])
    final_run = _final_run(run_dir, run_facts, missing)
    checkpoint = _checkpoint(checkpoint_dir, missing)
    study = trial = None
    study_obj = _load_study(study_path, study_name, missing)
    if study_obj is not None:
        study, trial = _study_and_trial(study_obj, Path(study_path), trial_number, missing)  # type: ignore[arg-type]
    data = _data(run_dir, study_obj, recorded_data, missing)
    return Lineage(data=data, study=study, best_trial=trial, final_run=final_run, checkpoint=checkpoint,
                   backup=backup, missing=tuple(missing))


def locate(path: Path) -> tuple[Path | None, Path | None]:
    """``(run dir, checkpoint dir)`` of a run directory or a checkpoint directory."""
    path = path.absolute()
    if (path / contract.CHECKPOINT_DIR).is_dir() or (path / contract.RESULT_FILE).is_file():
        return path, path / contract.CHECKPOINT_DIR
    if path.exists():
        parent = path.parent
        run_dir = parent if (parent / contract.RESULT_FILE).is_file() or (parent / contract.LINEAGE_FILE).is_file() \
            else None
        return run_dir, path
    return None, None


def _recorded(run_dir: Path | None, missing: list[str]) -> Lineage | None:
    if run_dir is None or not (run_dir / contract.LINEAGE_FILE).is_file():
        return None
    try:
        return Lineage.read(run_dir / contract.LINEAGE_FILE)
    except (OSError, ValueError, TypeError) as err:
        missing.append(f"lineage.json: unreadable ({err})")
        return None


def _final_run(run_dir: Path | None, facts: RunLineage | None, missing: list[str]) -> RunLineage | None:
    if run_dir is None:
        missing.append("final run: no run directory (result.json) found beside the model")
        return None
    from nbexec.result import TrainingResult

    try:
        result = TrainingResult.load(run_dir)
    except (OSError, ValueError, KeyError) as err:
        missing.append(f"final run: {run_dir / contract.RESULT_FILE} unreadable ({type(err).__name__})")
        return facts
    if facts is None:
        missing.append("final run: code version and hardware (recorded only in lineage.json at training time)")
        facts = RunLineage()
    return RunLineage(
        mlflow_run_id=result.mlflow_run_id, mlflow_experiment_id=facts.mlflow_experiment_id,
        run_name=result.run_name, run_dir=str(run_dir), config_hash=result.config_hash,
        git_commit=facts.git_commit, git_dirty=facts.git_dirty, nbexec_version=facts.nbexec_version,
        torch_version=facts.torch_version, hardware=facts.hardware,
    )


def _checkpoint(checkpoint_dir: Path | None, missing: list[str]) -> CheckpointLineage | None:
    if checkpoint_dir is None or not checkpoint_dir.exists() or (checkpoint_dir.is_dir()
                                                                 and not any(checkpoint_dir.iterdir())):
        missing.append(f"checkpoint: {checkpoint_dir or 'the model path'} does not exist or is empty")
        return None
    return checkpoint_lineage(checkpoint_dir)


def _load_study(study_path: Any, study_name: str | None, missing: list[str]) -> Any:
    if study_path is None:
        missing.append("study: no study file given or recorded")
        return None
    path = Path(study_path)
    if not path.is_file():  # Optuna would create an empty database: check first
        missing.append(f"study: {path} does not exist")
        return None
    try:
        import optuna
    except ImportError:
        missing.append("study: Optuna is not installed (pip install 'nbexec[hpo]')")
        return None
    storage = f"sqlite:///{path.absolute()}"
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as err:  # noqa: BLE001 - not an Optuna database
        missing.append(f"study: {path} is not an Optuna study file ({type(err).__name__})")
        return None
    if study_name is None:
        if len(names) != 1:
            missing.append(f"study: {path} holds {len(names)} studies ({', '.join(names)}); name one")
            return None
        study_name = names[0]
    if study_name not in names:
        missing.append(f"study: no study {study_name!r} in {path} (it has: {', '.join(names) or 'none'})")
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


def _study_and_trial(study: Any, path: Path, number: int | None,
                     missing: list[str]) -> tuple[StudyLineage, TrialLineage | None]:
    from nbexec.hpo.keys import STUDY_KEY_ATTR, TRIAL_KEY_ATTR
    from nbexec.hpo.sweep import ATTR_DATA_FINGERPRINT, ATTR_EXPERIMENT_ID, ATTR_OBJECTIVE, ATTR_STUDY_RUN
    from nbexec.hpo.trial import ATTR_MLFLOW_RUN

    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    objective = attrs.get(ATTR_OBJECTIVE) or {}
    lineage = StudyLineage(
        name=study.study_name, storage=f"sqlite:///{path.absolute()}", key_hash=attrs.get(STUDY_KEY_ATTR),
        trials_run=sum(1 for t in trials if t.state.is_finished()),
        best_value=study.best_value if complete else None, objective=objective.get("metric"),
        direction=study.direction.name.lower(), data_fingerprint=attrs.get(ATTR_DATA_FINGERPRINT),
        mlflow_run_id=attrs.get(ATTR_STUDY_RUN), mlflow_experiment_id=attrs.get(ATTR_EXPERIMENT_ID),
    )
    if number is None:
        if not complete:
            missing.append("best trial: the study has no completed trial")
            return lineage, None
        number = study.best_trial.number
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        missing.append(f"best trial: trial {number} is not in study {study.study_name!r}")
        return lineage, None
    trial = TrialLineage(number=found.number, params=dict(found.params), key_hash=found.user_attrs.get(TRIAL_KEY_ATTR),
                         value=found.value, mlflow_run_id=found.user_attrs.get(ATTR_MLFLOW_RUN))
    return lineage, trial


def _data(run_dir: Path | None, study: Any, recorded: DataLineage | None, missing: list[str]) -> DataLineage | None:
    from nbexec.hpo.fingerprint import data_fingerprint

    data_path = recorded.path if recorded is not None else None
    if data_path is None and run_dir is not None and (run_dir / contract.CONFIG_FILE).is_file():
        import yaml

        config = yaml.safe_load((run_dir / contract.CONFIG_FILE).read_text(encoding="utf-8")) or {}
        data_path = (config.get("data") or {}).get("path")
    if data_path is None and study is not None:
        from nbexec.hpo.sweep import ATTR_DATA_PATH

        data_path = study.user_attrs.get(ATTR_DATA_PATH)
    if data_path is None:
        missing.append("data: no data path in the run's config or the study")
        return None
    fp = data_fingerprint(data_path)
    if fp.sha256 is None:
        known = recorded.fingerprint if recorded is not None else None
        missing.append(f"data: {data_path} no longer exists (fingerprint {'as recorded' if known else 'unknown'})")
        return DataLineage(path=fp.path, fingerprint=known)
    return DataLineage(path=fp.path, fingerprint=fp.sha256)


def _sqlite_file(storage: str) -> str | None:
    return storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
