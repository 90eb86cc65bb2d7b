"""A training run's backup: run directory (with its checkpoint), ``mlflow.db`` and artifacts.

``--backup drive|PATH`` (``backup.enabled/target``) makes :func:`nbexec.launch`
call :func:`run_backup_finalizer` before anything is spawned (Drive is mounted
then, in the cell's thread, and an unusable target stops the launch) and run
the backup right after a successful job::

    <base>/<experiment>/<run name>/
      run/              the run directory: config, logs, events, result, checkpoint/
      mlflow/mlflow.db  a consistent snapshot (SQLite online backup) of the store
      mlflow/mlartifacts/<run id>/   the run's MLflow artifacts
      nbexec-backup.json

The outcome lands in ``result.backup`` (the :class:`BackupRecord` as a dict,
or ``{"error": ...}``), the run summary and the MLflow run's
``nbexec.backup.*`` tags. A failed backup never fails the training: the
result stays FINISHED and the error is shown.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import nbexec.contract as contract
from nbexec.backup.colab import flush_drive
from nbexec.backup.engine import Component, backup_components
from nbexec.backup.immediate import check_writable, on_drive, resolve_base, safe_name
from nbexec.backup.record import BackupRecord, BackupWarning
from nbexec.backup.restoring import ARTIFACTS_COMPONENT, MLFLOW_DB_COMPONENT, RUN_COMPONENT, STUDY_COMPONENT
from nbexec.errors import BackupError, ConfigError

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult

TAG_PREFIX = "nbexec.backup."


class RunBackup:
    """The backup of one launched run; its :meth:`finalize` is the runner finalizer."""

    def __init__(self, location: Path, *, project: str, tracking: Any = None, tracking_uri: str | None = None,
                 study: Path | None = None) -> None:
        self.location = location
        self.project = project
        self.tracking = tracking
        self.tracking_uri = tracking_uri
        self.study = study

    def finalize(self, result: TrainingResult) -> TrainingResult:
        """Back the run up if it FINISHED; never raises (a failure is recorded and warned)."""
        if not result.ok:
            return replace(result, backup={"skipped": f"the run ended {result.status.value}; nothing was backed up",
                                           "location": str(self.location)})
        try:
            result.write()  # result.json goes along (the runner rewrites it with the backup record)
            record = self.backup(result)
        except Exception as err:  # noqa: BLE001 - a backup must never hide a finished training
            message = str(err) if isinstance(err, BackupError) else f"{type(err).__name__}: {err}"
            self._tag(result.mlflow_run_id, {"status": "FAILED", "error": message, "location": str(self.location)})
            target = "drive" if on_drive(self.location) else str(self.location.parent.parent)
            warnings.warn(
                f"training {result.run_name} FINISHED, but its backup to {self.location} failed: {message}. "
                f"The checkpoint is still in {result.run_dir}; back it up with: nbexec backup {result.run_dir} "
                f"--to {target}",
                BackupWarning,
                stacklevel=2,
            )
            return replace(result, backup={"error": message, "location": str(self.location)})
        return replace(result, backup=record.to_dict())

    def backup(self, result: TrainingResult) -> BackupRecord:
        """Back the run up now (see the module docstring).

        Raises:
            BackupError: a copy failed or did not verify.
        """
        meta = {
            "project": self.project,
            "run_name": result.run_name,
            "mlflow_run_id": result.mlflow_run_id,
            "config_hash": result.config_hash,
            "checkpoint": f"{RUN_COMPONENT}/checkpoint" if result.checkpoint else None,
        }
        run_comp = Component(RUN_COMPONENT, Path(result.run_dir).absolute(), RUN_COMPONENT, "dir")
        first = backup_components(self.location, [run_comp], source_label=str(result.run_dir), meta=meta)
        # Tag the MLflow run before its store is copied, so the copy carries the tags too.
        self._tag(result.mlflow_run_id, _record_tags(first))
        tracking_comps, notes = self._tracking_components(result.mlflow_run_id)
        if tracking_comps:
            try:
                second = backup_components(self.location, tracking_comps, source_label=str(result.run_dir),
                                           meta={"tracking_uri": self.resolved_tracking_uri()})
            except BackupError as err:
                raise BackupError(
                    f"{err}; the run directory with its checkpoint was backed up and verified "
                    f"({first.verified_at}) in {self.location}, the MLflow store was not"
                ) from err
            record = _merge(first, second, notes)
        else:
            record = replace(first, notes=tuple(notes))
        if on_drive(self.location):
            flush_drive()
        self._tag(result.mlflow_run_id, _record_tags(record))
        return record

    def resolved_tracking_uri(self) -> str | None:
        if self.tracking_uri:
            return self.tracking_uri
        setup = getattr(self.tracking, "setup", None) if self.tracking is not None else None
        return getattr(setup, "tracking_uri", None)

    def _tracking_components(self, run_id: str | None) -> tuple[list[Component], list[str]]:
        comps: list[Component] = []
        notes: list[str] = []
        if self.study is not None:
            comps.append(Component(STUDY_COMPONENT, self.study.absolute(), "hpo/study.db", "sqlite"))
        uri = self.resolved_tracking_uri()
        if uri is None:
            notes.append("no MLflow store to back up (tracking was off, or its run could not be opened)")
            return comps, notes
        from nbexec.tracking.store import sqlite_path

        db = sqlite_path(uri)
        if db is None:
            notes.append(f"the MLflow store {uri} is a server: back it up on the server's side")
            return comps, notes
        comps.append(Component(MLFLOW_DB_COMPONENT, db, "mlflow/mlflow.db", "sqlite"))
        # This run's artifacts only: the root holds every run's, and each run's backup has its own.
        root = self._artifact_dir(db)
        if run_id and root is not None and (root / run_id).is_dir():
            comps.append(Component(ARTIFACTS_COMPONENT, root / run_id, f"mlflow/mlartifacts/{run_id}", "dir"))
        return comps, notes

    def _artifact_dir(self, db: Path) -> Path | None:
        setup = getattr(self.tracking, "setup", None) if self.tracking is not None else None
        location = getattr(setup, "artifact_location", None)
        if location:
            parsed = urlparse(str(location))
            if parsed.scheme in ("", "file"):
                return Path(unquote(parsed.path))
            return None  # artifacts on a server or bucket: not ours to copy
        from nbexec.tracking.store import DEFAULT_ARTIFACT_DIR

        return db.parent / DEFAULT_ARTIFACT_DIR

    def _tag(self, run_id: str | None, values: Mapping[str, object]) -> None:
        uri = self.resolved_tracking_uri()
        if not run_id or not uri:
            return
        try:
            from mlflow.entities import RunTag

            from nbexec.tracking.batching import MAX_TAG_VALUE, log_batch_chunked, truncate
            from nbexec.tracking.store import get_client

            tags = [RunTag(TAG_PREFIX + k, truncate(str(v), MAX_TAG_VALUE)) for k, v in values.items()]
            log_batch_chunked(get_client(uri), run_id, tags=tags)
        except Exception as err:  # noqa: BLE001 - tags are bookkeeping; the backup stands
            warnings.warn(f"could not tag MLflow run {run_id} with its backup: {err}", BackupWarning, stacklevel=3)


def run_backup_finalizer(plan: LaunchPlan, *, tracking: Any = None) -> RunBackup | None:
    """Prepare the backup of a run about to launch (``backup.enabled``), or None.

    Resolves and checks the target now, before anything is spawned: Drive is
    mounted (on Colab) and a folder must be writable.

    Raises:
        ConfigError: backups are on but ``backup.target`` is not set.
        BackupError: Drive cannot be mounted, or the folder cannot be written.
    """
    cfg = plan.config.backup
    if not cfg.enabled:
        return None
    if not cfg.target:
        raise ConfigError(
            "backup.enabled is true but backup.target is not set; set it to 'drive' (Google Drive on "
            "Colab) or a folder (--backup drive|PATH), or turn backups off (--backup off)",
            field="backup.target",
            value=None,
        )
    base = resolve_base(cfg.target)
    check_writable(base)
    project = plan.config.tracking.experiment
    location = base / safe_name(project) / safe_name(plan.run_name)
    return RunBackup(location, project=project, tracking=tracking if plan.config.tracking.enabled else None)


def backup_run(
    run_dir: str | Path,
    target: str | Path,
    *,
    project: str | None = None,
    tracking_uri: str | None = None,
    study: str | Path | None = None,
) -> BackupRecord:
    """Back up a finished run directory (and a tracking store, a study) by hand.

    Args:
        run_dir: ``<output_dir>/<run_name>`` of a run (its ``result.json`` is read).
        target: ``"drive"`` or a folder.
        project: the folder level under the target (default: the run's
            experiment from its config, else ``"default"``).
        tracking_uri: an MLflow ``sqlite:///`` store to include.
        study: an Optuna ``study.db`` to include.

    Raises:
        BackupError: as :func:`nbexec.backup.immediate_backup_if_needed`.
    """
    from nbexec.result import TrainingResult

    run_dir = Path(run_dir).absolute()
    try:
        result = TrainingResult.load(run_dir)
    except FileNotFoundError:
        raise BackupError(f"{run_dir} is not a finished nbexec run directory (no result.json)") from None
    project = project or _experiment_of(run_dir) or "default"
    base = resolve_base(target)
    check_writable(base)
    location = base / safe_name(project) / safe_name(result.run_name)
    backup = RunBackup(location, project=project, tracking_uri=tracking_uri,
                       study=Path(study) if study is not None else None)
    return backup.backup(replace(result, run_dir=run_dir))


def _experiment_of(run_dir: Path) -> str | None:
    import yaml

    try:
        config = yaml.safe_load((run_dir / contract.CONFIG_FILE).read_text())
        return str(config["tracking"]["experiment"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


def _record_tags(record: BackupRecord) -> dict[str, object]:
    return {
        "status": "VERIFIED" if record.verified else "NOT VERIFIED",
        "location": record.location,
        "verified_at": record.verified_at,
        "manifest": record.manifest,
        "files": f"{record.files_copied} copied, {record.files_skipped} unchanged",
        "bytes": record.bytes_copied,
    }


def _merge(first: BackupRecord, second: BackupRecord, notes: list[str]) -> BackupRecord:
    return replace(
        second,
        source=first.source,
        files_copied=first.files_copied + second.files_copied,
        files_skipped=first.files_skipped + second.files_skipped,
        bytes_copied=first.bytes_copied + second.bytes_copied,
        duration_s=round(first.duration_s + second.duration_s, 3),
        files_removed=first.files_removed + second.files_removed,
        notes=tuple(notes),
    )


__all__ = ["RunBackup", "run_backup_finalizer", "backup_run", "TAG_PREFIX"]
