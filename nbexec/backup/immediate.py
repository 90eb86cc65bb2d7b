"""The backup entry points: :func:`immediate_backup_if_needed` and :func:`verify_backup`.

Layout of a backup location (``<base>/<project>/<run name>/``, where ``base``
is a folder you choose, or ``MyDrive/nbexec`` on Google Drive)::

    nbexec-backup.json   the manifest: every file's size and sha256 (written last)
    <name>/...           what was backed up (a checkpoint directory: its files)

A run's backup (``--backup``) also holds ``run/`` (the run directory with its
checkpoint) and ``mlflow/`` (a consistent copy of ``mlflow.db`` and the
artifacts); see :mod:`nbexec.backup.run_backup`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nbexec.backup.colab import flush_drive, mount_drive, my_drive
from nbexec.backup.engine import Component, backup_components
from nbexec.backup.record import BackupRecord, Manifest
from nbexec.errors import BackupError
from nbexec.hashing import file_sha256

DRIVE = "drive"
DRIVE_FOLDER = "nbexec"
DEFAULT_PROJECT = "default"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def immediate_backup_if_needed(
    source: str | os.PathLike[str],
    *,
    backup_enabled: bool,
    backup_to_drive: bool = False,
    target: str | os.PathLike[str] | None = None,
    project: str | None = None,
    run_name: str | None = None,
    durable: bool = True,
) -> BackupRecord | None:
    """Back ``source`` (a checkpoint directory or a file) up now, verified, if backups are on.

    The copy goes to ``<base>/<project>/<run_name>/<source name>`` with the
    manifest at ``<base>/<project>/<run_name>/nbexec-backup.json``; ``base``
    is ``target`` (a folder anywhere), or ``MyDrive/nbexec`` when
    ``backup_to_drive`` (Drive is mounted on Colab; a relative ``target`` is
    then a folder under ``MyDrive``). A second backup of an unchanged source
    copies nothing.

    Args:
        source: what to back up.
        backup_enabled: False: do nothing and return None.
        backup_to_drive: back up to Google Drive (Colab).
        target: the base folder (``"drive"`` means Google Drive too).
        project: the folder level under ``base`` (default ``"default"``).
        run_name: the folder level under the project (default: the source's name).
        durable: fsync every file before it is published (leave on; the
            benchmark turns it off to compare with ``cp -r``).

    Returns:
        The :class:`BackupRecord`, or None when ``backup_enabled`` is False.

    Raises:
        BackupError: no target, Drive cannot be mounted, the source is
            missing, a copy cannot be written or fails verification.
    """
    if not backup_enabled:
        return None
    src = Path(source).expanduser().absolute()
    if not src.exists():
        raise BackupError(f"nothing to back up: {src} does not exist")
    location = resolve_location(
        target, backup_to_drive=backup_to_drive, project=project, run_name=run_name or src.name
    )
    kind = "dir" if src.is_dir() else "file"
    comp = Component(name=src.name, source=src, path=safe_name(src.name), kind=kind)
    meta = {"project": project or DEFAULT_PROJECT, "run_name": run_name or src.name}
    record = backup_components(location, [comp], source_label=str(src), meta=meta, durable=durable)
    if on_drive(location):
        flush_drive()
    return record


def resolve_location(
    target: str | os.PathLike[str] | None,
    *,
    backup_to_drive: bool = False,
    project: str | None = None,
    run_name: str,
) -> Path:
    """``<base>/<project>/<run_name>``, mounting Drive when the target is Drive.

    Raises:
        BackupError: no target given, or Drive cannot be mounted.
    """
    base = resolve_base(target, backup_to_drive=backup_to_drive)
    return base / safe_name(project or DEFAULT_PROJECT) / safe_name(run_name)


def resolve_base(target: str | os.PathLike[str] | None, *, backup_to_drive: bool = False) -> Path:
    """The base folder of backups: ``target``, or ``MyDrive/nbexec`` (Drive mounted now).

    Raises:
        BackupError: no target given, or Drive cannot be mounted.
    """
    text = str(target).strip() if target is not None else ""
    if text.lower() == DRIVE:
        backup_to_drive, text = True, ""
    if backup_to_drive:
        drive = mount_drive()
        if not text:
            return drive / DRIVE_FOLDER
        path = Path(text).expanduser()
        if not path.is_absolute():
            return drive / path
        if drive.parent not in path.parents and path != drive.parent:
            raise BackupError(
                f"backup target {path} is not on Google Drive (mounted at {drive.parent}); give a folder "
                "under MyDrive, a relative one, or turn backup_to_drive off"
            )
        return path
    if not text:
        raise BackupError(
            "backup is enabled but has no target: give a folder (--backup PATH, backup.target: PATH) "
            "or Google Drive (--backup drive)"
        )
    return Path(text).expanduser().absolute()


def check_writable(base: Path) -> None:
    """Fail before training when the backup folder cannot be created or written.

    Raises:
        BackupError: naming the folder and the fix.
    """
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackupError(
            f"cannot create the backup folder {base} ({err.strerror or err}); choose a writable "
            "folder (--backup PATH) or turn backups off (--backup off)"
        ) from err
    if not os.access(base, os.W_OK | os.X_OK):
        raise BackupError(
            f"the backup folder {base} is not writable; choose another (--backup PATH) or "
            "turn backups off (--backup off)"
        )


def verify_backup(location: str | os.PathLike[str]) -> Manifest:
    """Hash every file of a backup and compare with its manifest.

    Returns:
        The manifest (every file in it checked).

    Raises:
        BackupError: the manifest is missing, or files are missing or differ
            (every bad file is named).
    """
    loc = Path(location)
    manifest = Manifest.load(loc)
    problems = []
    for key, entry in sorted(manifest.files.items()):
        path = loc / key
        if not path.is_file():
            problems.append(f"{key}: missing")
            continue
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            problems.append(f"{key}: sha256 {actual[:16]}... differs from the manifest's {entry['sha256'][:16]}...")
    if problems:
        raise BackupError(
            f"backup {loc} fails verification ({len(problems)} of {len(manifest.files)} files):\n  "
            + "\n  ".join(problems)
            + "\nback up again from the source, or restore from another backup"
        )
    return manifest


def on_drive(path: Path) -> bool:
    """True when ``path`` is under the Drive mount point."""
    drive = my_drive().parent
    return drive == path or drive in path.parents


def safe_name(name: str) -> str:
    """A folder name from a project or run name: no separators, no dot-only names."""
    cleaned = _UNSAFE.sub("-", str(name)).strip("-")
    return cleaned if cleaned.strip(".") else "unnamed"


__all__ = [
    "immediate_backup_if_needed",
    "resolve_location",
    "resolve_base",
    "check_writable",
    "verify_backup",
    "safe_name",
    "on_drive",
]
