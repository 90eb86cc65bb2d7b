"""Colab detection and Google Drive mounting.

Colab is detected in the kernel (``google.colab`` imported) *and* in child
processes, which never import it, by the file Colab VMs have at
``/var/colab/hostname`` (``$NBEXEC_COLAB_MARKER`` names another file, for
tests). ``COLAB_RELEASE_TAG`` is not used: Kaggle sets it too.

Drive is mounted through ``google.colab.drive.mount`` at ``/content/drive``
(``$NBEXEC_DRIVE_MOUNT`` for another mount point); an already mounted Drive
is reused. Only the notebook's kernel can mount (it asks the user to
authorise); a child process can use a Drive the notebook mounted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nbexec.errors import BackupError

ENV_COLAB_MARKER = "NBEXEC_COLAB_MARKER"
ENV_DRIVE_MOUNT = "NBEXEC_DRIVE_MOUNT"
COLAB_MARKER = "/var/colab/hostname"
DRIVE_MOUNT = "/content/drive"
MY_DRIVE = "MyDrive"
MOUNT_TIMEOUT_MS = 120_000


def colab_marker() -> Path:
    """The file whose existence marks a Colab VM."""
    return Path(os.environ.get(ENV_COLAB_MARKER) or COLAB_MARKER)


def drive_mount_point() -> Path:
    """Where Drive is (or will be) mounted."""
    return Path(os.environ.get(ENV_DRIVE_MOUNT) or DRIVE_MOUNT)


def is_colab() -> bool:
    """True on a Colab VM: in the notebook's kernel and in any process started from it."""
    return "google.colab" in sys.modules or colab_marker().exists()


def my_drive(mount_point: str | os.PathLike[str] | None = None) -> Path:
    """The ``MyDrive`` folder under the mount point (mounted or not)."""
    return Path(mount_point or drive_mount_point()) / MY_DRIVE


def mount_drive(
    mount_point: str | os.PathLike[str] | None = None,
    *,
    timeout_ms: int = MOUNT_TIMEOUT_MS,
    force_remount: bool = False,
) -> Path:
    """Mount Google Drive (Colab only) and return its ``MyDrive`` folder.

    An already mounted Drive is reused (no prompt) unless ``force_remount``.

    Args:
        mount_point: where to mount (default ``/content/drive``).
        timeout_ms: how long ``drive.mount`` may wait for the user to authorise.
        force_remount: mount again even when Drive is already mounted.

    Raises:
        BackupError: not on Colab, or mounting failed; the message says what to do.
    """
    mount = Path(mount_point or drive_mount_point())
    target = my_drive(mount)
    if target.is_dir() and not force_remount:
        return target
    if not is_colab():
        raise BackupError(
            "Google Drive can only be mounted on Colab, and this is not a Colab VM "
            f"(no google.colab module, no {colab_marker()}); back up to a folder instead "
            "(--backup PATH, backup.target: PATH)"
        )
    try:
        from google.colab import drive  # type: ignore[import-not-found]
    except ImportError as err:
        raise BackupError(
            f"this is a Colab VM but google.colab cannot be imported here ({err}); mount Drive in the "
            f"notebook first (from google.colab import drive; drive.mount({str(mount)!r})), then back up"
        ) from err
    try:
        drive.mount(str(mount), force_remount=force_remount, timeout_ms=timeout_ms)
    except Exception as err:  # noqa: BLE001 - whatever the mount raises, the user needs the same advice
        raise BackupError(
            f"mounting Google Drive at {mount} failed ({type(err).__name__}: {err}); run "
            f"drive.mount({str(mount)!r}) in a cell and authorise, or back up to a folder (--backup PATH)"
        ) from err
    if not target.is_dir():
        raise BackupError(
            f"Google Drive was mounted at {mount} but {target} does not exist; remount with "
            "force_remount=True, or back up to a folder (--backup PATH)"
        )
    return target


def flush_drive(*, unmount: bool = False, timeout_ms: int = MOUNT_TIMEOUT_MS) -> None:
    """Push pending writes to Drive, so a VM recycled right after a backup loses nothing.

    The backup already fsyncs every file; this also asks the kernel to write
    everything out (``os.sync``) and, with ``unmount``, calls
    ``drive.flush_and_unmount`` (the only flush Colab's API offers; Drive is
    unmounted afterwards). Outside Colab only ``os.sync`` runs.
    """
    os.sync()
    if not is_colab():
        return
    try:
        from google.colab import drive  # type: ignore[import-not-found]
    except ImportError:
        return
    flush = getattr(drive, "flush", None)  # not in Colab's API today; used if it appears
    if callable(flush):
        flush()
    if unmount:
        drive.flush_and_unmount(timeout_ms=timeout_ms)


__all__ = ["is_colab", "mount_drive", "my_drive", "flush_drive", "drive_mount_point", "colab_marker"]
