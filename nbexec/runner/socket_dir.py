"""The private folder of a job's log sockets, and the removal of folders their owner left behind.

Unix socket paths are limited to ~107 bytes, so the sockets live in a short
``$TMPDIR/nbexec-XXXXXXXX/`` folder rather than in the run directory. The
process that made it removes it when the job is over; a process that is
killed outright (SIGKILL) cannot. So each folder names its owner (an
``owner`` file: pid and process start time), and making a new folder first
removes the folders whose owner is gone. A pid that was reused by another
process does not keep a folder: the start time tells them apart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "nbexec-"
OWNER_FILE = "owner"


def make_socket_dir() -> str:
    """A new private folder for one job's sockets, after removing those of dead owners."""
    remove_stale_socket_dirs()
    path = tempfile.mkdtemp(prefix=PREFIX)
    Path(path, OWNER_FILE).write_text(_identity(os.getpid()) or str(os.getpid()))
    return path


def remove_socket_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_socket_dirs(tmp: str | None = None) -> list[str]:
    """Remove the ``nbexec-*`` folders (this user's, with an owner file) whose owner has exited.

    Returns:
        The folders removed.
    """
    base = Path(tmp or tempfile.gettempdir())
    removed: list[str] = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = list(base.glob(PREFIX + "*"))
    except OSError:
        return removed
    for folder in entries:
        try:
            if uid is not None and folder.lstat().st_uid != uid:
                continue
            owner = (folder / OWNER_FILE).read_text().strip()
        except (OSError, UnicodeDecodeError):  # not ours, not a folder, or being made right now
            continue
        if not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def _identity(pid: int) -> str | None:
    """``"<pid> <start time>"``, the start time in clock ticks since boot (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parens: count fields after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    return f"{pid} {int(fields[19])}"


def _alive(owner: str) -> bool:
    try:
        pid = int(owner.split()[0])
    except (ValueError, IndexError):
        return True  # unreadable: not ours to judge
    if " " in owner:
        return _identity(pid) == owner
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
