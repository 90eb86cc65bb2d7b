"""Colab detection and Drive mounting, with google.colab faked; everything around the mount is real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbexec.backup import flush_drive, immediate_backup_if_needed, is_colab, mount_drive, verify_backup
from nbexec.errors import BackupError

from .conftest import drive_calls, make_checkpoint, same_bytes, tree_files

CHILD_PROBE = "import json, sys; from nbexec.backup import is_colab; print(json.dumps([is_colab(), 'google.colab' in sys.modules]))"


def child_sees_colab() -> list[bool]:
    out = subprocess.run([sys.executable, "-c", CHILD_PROBE], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_off_colab_nothing_mounts(tmp_path: Path) -> None:
    assert not is_colab()
    assert child_sees_colab() == [False, False]
    with pytest.raises(BackupError, match=r"only be mounted on Colab.*no-colab-marker.*--backup PATH"):
        mount_drive()
    assert not (tmp_path / "content").exists()


def test_colab_is_detected_in_the_kernel_and_in_child_processes(fake_colab: Path) -> None:
    assert is_colab()  # the marker file
    # a child process never imports google.colab, and still knows (the marker)
    assert child_sees_colab() == [True, False]
    import google.colab  # noqa: F401 - what a Colab kernel has loaded

    assert is_colab()


def test_mount_reuses_a_mounted_drive(fake_colab: Path, tmp_path: Path) -> None:
    drive = mount_drive(timeout_ms=5000)
    assert drive == tmp_path / "content" / "drive" / "MyDrive" and drive.is_dir()
    assert mount_drive() == drive
    calls = drive_calls(fake_colab)
    assert calls == [{"call": "mount", "mountpoint": str(tmp_path / "content" / "drive"),
                      "force_remount": False, "timeout_ms": 5000}]
    mount_drive(force_remount=True)
    assert [c["force_remount"] for c in drive_calls(fake_colab)] == [False, True]


def test_a_failing_mount_is_a_clear_backup_error(fake_colab: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_DRIVE_FAIL", "1")
    src = make_checkpoint(tmp_path / "ckpt")
    with pytest.raises(BackupError, match=r"mounting Google Drive at .* failed \(ValueError: mount failed.*"
                                          r"drive\.mount\(.*--backup PATH"):
        immediate_backup_if_needed(src, backup_enabled=True, backup_to_drive=True, project="p", run_name="r")
    assert not (tmp_path / "content" / "drive" / "MyDrive").exists()


def test_backup_to_drive_lands_in_mydrive_and_is_flushed(fake_colab: Path, tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    record = immediate_backup_if_needed(src, backup_enabled=True, backup_to_drive=True, project="ner",
                                        run_name="ner-run-7")
    assert record is not None and record.verified
    location = tmp_path / "content" / "drive" / "MyDrive" / "nbexec" / "ner" / "ner-run-7"
    assert record.location == str(location)
    for rel, path in tree_files(src).items():
        assert same_bytes(path, location / "ckpt" / rel)
    verify_backup(location)
    assert [c["call"] for c in drive_calls(fake_colab)] == ["mount", "flush"]

    # "drive" as the target means the same; a relative target is a folder under MyDrive
    again = immediate_backup_if_needed(src, backup_enabled=True, target="drive", project="ner", run_name="ner-run-7")
    assert again is not None and again.location == str(location) and again.files_copied == 0
    other = immediate_backup_if_needed(src, backup_enabled=True, backup_to_drive=True, target="elsewhere",
                                       project="ner", run_name="r")
    assert other is not None
    assert other.location == str(tmp_path / "content" / "drive" / "MyDrive" / "elsewhere" / "ner" / "r")
    with pytest.raises(BackupError, match="not on Google Drive"):
        immediate_backup_if_needed(src, backup_enabled=True, backup_to_drive=True, target=tmp_path / "local",
                                   project="ner", run_name="r")
    assert [c["call"] for c in drive_calls(fake_colab)].count("mount") == 1  # mounted once, reused


def test_flush_and_unmount_when_asked(fake_colab: Path) -> None:
    mount_drive()
    flush_drive(unmount=True, timeout_ms=1234)
    calls = drive_calls(fake_colab)
    assert calls[-2:] == [{"call": "flush"}, {"call": "flush_and_unmount", "timeout_ms": 1234}]
