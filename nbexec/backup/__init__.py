"""Backups that survive Colab: verified, incremental, atomic copies; restore and resume.

- :func:`immediate_backup_if_needed` — back a checkpoint (or any folder or
  file) up now to a folder or Google Drive; returns a :class:`BackupRecord`.
- :func:`backup_run` — a finished run directory with its MLflow store and
  artifacts (``nbexec backup``); ``--backup`` does this after every run.
- :func:`verify_backup` — hash a backup against its manifest.
- :func:`restore` — bring a backup back (``nbexec restore``) and resume from it.
- :func:`is_colab`, :func:`mount_drive`, :func:`flush_drive` — Colab and Drive.
- :func:`snapshot_sqlite` — a consistent copy of a live SQLite database.

Importing this package imports neither torch nor mlflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec._lazy import lazy_exports

# Loaded on first use: ``nbexec train`` imports the ``nbexec backup`` parser,
# not the backup engine.
_EXPORTS: dict[str, str] = {
    "BackupRecord": "nbexec.backup.record",
    "BackupWarning": "nbexec.backup.record",
    "RestoreResult": "nbexec.backup.restoring",
    "backup_run": "nbexec.backup.run_backup",
    "flush_drive": "nbexec.backup.colab",
    "immediate_backup_if_needed": "nbexec.backup.immediate",
    "is_colab": "nbexec.backup.colab",
    "mount_drive": "nbexec.backup.colab",
    "restore": "nbexec.backup.restoring",
    "run_backup_finalizer": "nbexec.backup.run_backup",
    "snapshot_sqlite": "nbexec.backup.sqlite",
    "verify_backup": "nbexec.backup.immediate",
}

__all__ = [
    "BackupRecord",
    "BackupWarning",
    "RestoreResult",
    "backup_run",
    "flush_drive",
    "immediate_backup_if_needed",
    "is_colab",
    "mount_drive",
    "restore",
    "run_backup_finalizer",
    "snapshot_sqlite",
    "verify_backup",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from nbexec.backup.colab import flush_drive, is_colab, mount_drive
    from nbexec.backup.immediate import immediate_backup_if_needed, verify_backup
    from nbexec.backup.record import BackupRecord, BackupWarning
    from nbexec.backup.restoring import RestoreResult, restore
    from nbexec.backup.run_backup import backup_run, run_backup_finalizer
    from nbexec.backup.sqlite import snapshot_sqlite
