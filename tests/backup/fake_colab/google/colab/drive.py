"""A stand-in for ``google.colab.drive``: ``mount`` makes ``<mountpoint>/MyDrive``.

Each call is appended to ``$FAKE_DRIVE_LOG`` (JSON lines) so tests can see
what nbexec asked for; ``$FAKE_DRIVE_FAIL`` makes ``mount`` raise like a
refused authorisation does.
"""

import json
import os
from pathlib import Path


def _log(**entry):
    path = os.environ.get("FAKE_DRIVE_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    _log(call="mount", mountpoint=str(mountpoint), force_remount=force_remount, timeout_ms=timeout_ms)
    if os.environ.get("FAKE_DRIVE_FAIL"):
        raise ValueError("mount failed: credential propagation was unsuccessful")
    (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)


def flush():
    _log(call="flush")


def flush_and_unmount(timeout_ms=86400000):
    _log(call="flush_and_unmount", timeout_ms=timeout_ms)
