"""``run_final_training_workflow``: the study's best config -> final training -> backup -> lineage -> tags.

    final = run_final_training_workflow("outputs/hpo/study.db", backup_enabled=True)
    final.result.checkpoint, final.lineage, final.backup.status

The backup goes through ``nbexec.backup.immediate_backup_if_needed`` when that
capability is installed; otherwise the outcome says "backup not available"
and the lineage lists it as missing, and training is not affected.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.errors import BackupError, ConfigError
from nbexec.hpo.sweep import ATTR_BASE_CONFIG, ATTR_OUTPUT_DIR, DEFAULT_STUDY_PATH, require_optuna, study_inputs
from nbexec.lineage.record import BackupLineage, DataLineage, Lineage, RunLineage, git_state
from nbexec.render.summary import RunSummary, render_summary_html

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.result import TrainingResult
    from nbexec.runner.sinks import Sink

ATTR_FINAL_RUN = "nbexec.final_run"  # study user attribute: the latest final run trained from it


class BackupWarning(UserWarning):
    """The checkpoint could not be backed up; the trained model itself is fine."""


@dataclass(frozen=True)
class BackupOutcome:
    """What happened to the backup: ``off``, ``done``, ``unavailable`` (no backup capability) or ``failed``."""

    status: str
    message: str
    record: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("off", "done")


@dataclass(frozen=True)
class FinalTrainingResult:
    """The final run's result, its lineage (also in ``lineage.json`` and the run's tags) and the backup."""

    result: TrainingResult
    lineage: Lineage
    lineage_path: Path
    backup: BackupOutcome
    config: TrainingConfig
    study_name: str | None = None
    trial_number: int | None = None

    def __repr__(self) -> str:
        trial = f" from trial {self.trial_number} of {self.study_name!r}" if self.study_name else ""
        return f"<FinalTrainingResult {self.result.run_name!r} {self.result.status.value}{trial}, backup {self.backup.status}>"

    def __str__(self) -> str:
        return f"{self!r}\n{self.lineage}"

    def _repr_html_(self) -> str:  # a notebook shows the run summary with the full lineage table
        from nbexec.tracking.store import known_server_url  # lazy: only a notebook front end calls this

        summary = RunSummary.from_result(self.result, lineage=self.lineage, tracking_url=known_server_url())
        return render_summary_html(summary)


def run_final_training_workflow(
    study_path: str | os.PathLike[str] | None = DEFAULT_STUDY_PATH,
    *,
    study_name: str | None = None,
    trial_number: int | None = None,
    config: str | Path | Mapping[str, Any] | TrainingConfig | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
    nproc: int | str | None = None,
    backup_enabled: bool = False,
    backup_to_drive: bool = False,
    backup_target: str | None = None,
    sinks: Sequence[Sink] = (),
    stream: bool = False,
) -> FinalTrainingResult:
    """Train the final model with a study's best params, back it up, record and tag its lineage.

    Args:
        study_path: the study file (``None``: no study; train ``config`` as given).
        study_name: which study in the file (default: its only one).
        trial_number: train this trial's params instead of the best trial's.
        config: the base config (default: the one the study was run with).
        overrides, nproc: applied on top (e.g. more epochs for the final run).
        output_dir: where the run directory goes (default: the study's trial folder).
        run_name: the run's name (default: from the naming policy, stage ``final``).
        backup_enabled, backup_to_drive, backup_target: back the checkpoint up right
            after training (``immediate_backup_if_needed``); Drive when ``backup_to_drive``.
        sinks: display sinks for the job; ``stream`` prints its lines.

    Returns:
        The :class:`FinalTrainingResult`.

    Raises:
        ConfigError: no such study file, study or trial, no completed trial, or no config.
        TrainingFailed, TrainingCancelled: the final training did not finish (no lineage is written).
    """
    from nbexec.executor import launch, prepare
    from nbexec.hpo.space import apply_params
    from nbexec.naming import build_training_run_name_with_fallback
    from nbexec.runner.sinks import TerminalSink

    study = trial = None
    if study_path is not None:
        study = _load_study(Path(study_path), study_name)
        trial = _pick_trial(study, trial_number)
    base = _base_config(study, config, overrides)
    _, data_path, _ = study_inputs(base)
    params = dict(trial.params) if trial is not None else {}
    if data_path:
        params["data.path"] = data_path
    out = Path(output_dir) if output_dir is not None else (
        Path(study.user_attrs[ATTR_OUTPUT_DIR]) if study is not None and study.user_attrs.get(ATTR_OUTPUT_DIR)
        else Path(base.output.dir))
    cfg = apply_params(base, params, output={"dir": str(out.absolute())})
    name = run_name or build_training_run_name_with_fallback(cfg, stage="final",
                                                            taken=lambda n: (out.absolute() / n).exists())
    plan = prepare(cfg, run_name=name, nproc=nproc)
    run = launch(plan=plan, sinks=[*sinks, *([TerminalSink()] if stream else [])])
    try:
        run.wait()
    except BaseException:
        run.cancel()
        raise
    result = run.result()
    if result.backup and not (backup_enabled or backup_to_drive):
        backup = _run_backup_outcome(result.backup)  # the config's backup section: launch() did it already
    else:
        backup = _backup(result, backup_enabled=backup_enabled, backup_to_drive=backup_to_drive,
                         target=backup_target, project=study.study_name if study is not None else None)
    lineage = _lineage(result, plan, run.tracking, study_path if study is not None else None,
                       study.study_name if study is not None else None, trial, backup, data_path)
    path = lineage.write(result.run_dir)
    _link_back(study, trial, result, lineage, run.tracking)
    return FinalTrainingResult(result=result, lineage=lineage, lineage_path=path, backup=backup, config=cfg,
                               study_name=study.study_name if study is not None else None,
                               trial_number=trial.number if trial is not None else None)


def _load_study(path: Path, name: str | None) -> Any:
    optuna = require_optuna()
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist; run run_hpo(...) / nbexec hpo first, "
                          "or pass study_path=None with a config", field="study_path", value=str(path))
    storage = f"sqlite:///{path.absolute()}"
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"{path} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              "pass study_name=", field="study_name", value=None)
        name = names[0]
    elif name not in names:
        raise ConfigError(f"no study {name!r} in {path}; it has: {', '.join(names) or 'none'}",
                          field="study_name", value=name)
    return optuna.load_study(study_name=name, storage=storage)


def _pick_trial(study: Any, number: int | None) -> Any:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if number is None:
        if not complete:
            raise ConfigError(f"study {study.study_name!r} has no completed trial to train from; "
                              "run more trials (run_hpo) first", field="study_path", value=study.study_name)
        return study.best_trial
    found = next((t for t in complete if t.number == number), None)
    if found is None:
        done = ", ".join(str(t.number) for t in complete) or "none"
        raise ConfigError(f"trial {number} of study {study.study_name!r} did not complete; completed: {done}",
                          field="trial_number", value=number)
    return found


def _base_config(study: Any, config: Any, overrides: Sequence[str]) -> TrainingConfig:
    from nbexec.config import load_config
    from nbexec.redact import REDACTED

    if config is None:
        if study is None:
            raise ConfigError("give a config (or a study to take it from)", field="config")
        stored = study.user_attrs.get(ATTR_BASE_CONFIG)
        if not stored:
            raise ConfigError(f"study {study.study_name!r} holds no base config; pass config=", field="config")
        if REDACTED in repr(stored):
            raise ConfigError("the study's config had secrets, which the study file does not keep; "
                              "pass the config (config=...)", field="config")
        config = stored
    return load_config(config, overrides=overrides)


def _run_backup_outcome(record: Mapping[str, Any]) -> BackupOutcome:
    """The outcome of the backup ``launch()`` ran for a config with ``backup.enabled`` (``result.backup``)."""
    if "error" in record:
        return BackupOutcome("failed", f"backup failed: {record['error']}")
    if "skipped" in record:
        return BackupOutcome("off", str(record["skipped"]))
    return BackupOutcome("done", f"backed up to {record.get('location')}", dict(record))


def _backup(result: TrainingResult, *, backup_enabled: bool, backup_to_drive: bool, target: str | None,
            project: str | None) -> BackupOutcome:
    if not (backup_enabled or backup_to_drive):
        return BackupOutcome("off", "no backup (not requested)")
    if result.checkpoint is None:
        return BackupOutcome("failed", "backup failed: nothing to back up, the run wrote no checkpoint")
    try:
        from nbexec.backup import immediate_backup_if_needed
    except ImportError as err:
        message = f"backup not available: this nbexec has no backup capability (nbexec.backup: {err})"
        warnings.warn(message, BackupWarning, stacklevel=3)
        return BackupOutcome("unavailable", message)
    try:
        record = immediate_backup_if_needed(result.checkpoint, backup_enabled=True, backup_to_drive=backup_to_drive,
                                            target=target, project=project, run_name=result.run_name)
    except BackupError as err:
        message = f"backup failed: {err}"
        warnings.warn(f"{message}; the checkpoint is at {result.checkpoint}", BackupWarning, stacklevel=3)
        return BackupOutcome("failed", message)
    if record is None:
        return BackupOutcome("off", "backup not done (disabled by the backup capability)")
    return BackupOutcome("done", f"backed up to {record.location}", record.to_dict())


def _lineage(result: TrainingResult, plan: Any, tracking: Any, study_path: Any, study_name: str | None,
             trial: Any, backup: BackupOutcome, data_path: str | None) -> Lineage:
    from nbexec.lineage.extract import build_lineage
    from nbexec.tracking.tags import _package_version, git_tags
    from nbexec.version import __version__

    git_commit, git_dirty = git_state(git_tags())
    facts = RunLineage(
        mlflow_experiment_id=_experiment_id(tracking), git_commit=git_commit, git_dirty=git_dirty,
        nbexec_version=__version__, torch_version=_package_version("torch"),
        hardware=plan.hardware.summary(),
    )
    missing = []
    backup_lineage = None
    if backup.status == "done" and backup.record is not None:
        rec = backup.record
        backup_lineage = BackupLineage(location=rec.get("location"), verified_at=rec.get("verified_at"),
                                       manifest=rec.get("manifest"))
    elif backup.status in ("unavailable", "failed"):
        missing.append(backup.message)
    return build_lineage(
        run_dir=result.run_dir, checkpoint_dir=result.checkpoint, study_path=study_path, study_name=study_name,
        trial_number=trial.number if trial is not None else None, run_facts=facts, backup=backup_lineage,
        recorded_data=DataLineage(path=data_path) if data_path else None, missing=missing,
    )


def _experiment_id(tracking: Any) -> str | None:
    if tracking is None:
        return None
    tracked = tracking.tracked() if hasattr(tracking, "tracked") else tracking
    return getattr(tracked, "experiment_id", None)


def _link_back(study: Any, trial: Any, result: TrainingResult, lineage: Lineage, tracking: Any) -> None:
    """Tags on the final run (the lineage), the best trial's and the study's runs; the study remembers it."""
    from nbexec.lineage.tags import apply_lineage_tags
    from nbexec.tracking.store import get_client

    if result.mlflow_run_id and tracking is not None:
        uri = tracking.setup.tracking_uri
        apply_lineage_tags(lineage, result.mlflow_run_id, tracking_uri=uri)
        client = get_client(uri)
        for run_id in (lineage.best_trial.mlflow_run_id if lineage.best_trial else None,
                       lineage.study.mlflow_run_id if lineage.study else None):
            if run_id:
                client.set_tag(run_id, "nbexec.hpo.final_run_id", result.mlflow_run_id)
    if study is not None:
        study.set_user_attr(ATTR_FINAL_RUN, {
            "run_name": result.run_name, "run_dir": str(result.run_dir), "mlflow_run_id": result.mlflow_run_id,
            "trial": trial.number if trial is not None else None,
        })
