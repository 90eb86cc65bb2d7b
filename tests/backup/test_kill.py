"""A backup process SIGKILLed mid-copy leaves no damaged file under a final name; the rerun completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from nbexec.backup import immediate_backup_if_needed, verify_backup
from nbexec.backup.record import MANIFEST_NAME

from .conftest import MB, sha256, tree_files, wait_for, write_random

SCRIPT = Path(__file__).resolve().parent / "scripts" / "backup_then_hang.py"
FILE_SIZE = 12 * MB  # two chunks of 8 MiB: a copy can stop half-way through a file


def kill_mid_copy(src: Path, target: Path, tmp_path: Path, hang_after: int, published) -> None:  # noqa: ANN001
    """Run the backup in a subprocess, SIGKILL it inside a copy once ``published()`` is true."""
    ready = tmp_path / f"ready-{hang_after}"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(src), str(target), str(ready), str(hang_after)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, "the backup to reach the middle of a copy")
        assert proc.poll() is None, f"the backup ended early: {proc.communicate()}"
        wait_for(published, "an earlier file to be verified and published")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def final_files(location: Path) -> dict[str, Path]:
    return {k: p for k, p in tree_files(location).items() if not k.endswith(".nbexec-tmp") and k != MANIFEST_NAME}


def test_sigkill_mid_copy_then_rerun(tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    for i, name in enumerate("abcd"):
        write_random(src / f"{name}.bin", FILE_SIZE, seed=i)
    target = tmp_path / "backups"
    location = target / "p" / "r"

    # 1. first backup, killed inside c.bin's copy (a and b written, c half-way)
    kill_mid_copy(src, target, tmp_path, 2 * FILE_SIZE + 8 * MB, (location / "ckpt" / "a.bin").exists)
    left = tree_files(location)
    partial = [k for k in left if Path(k).name.startswith(".c.bin.") and k.endswith(".nbexec-tmp")]
    assert len(partial) == 1, left
    assert (location / partial[0]).stat().st_size < FILE_SIZE  # really stopped half-way
    # b.bin may still be a temporary file (killed during its verification), never a final one that differs
    assert not (location / MANIFEST_NAME).exists()  # the manifest comes last
    finals = final_files(location)
    assert "ckpt/a.bin" in finals and "ckpt/c.bin" not in finals and "ckpt/d.bin" not in finals
    for key, path in finals.items():
        assert sha256(path) == sha256(src / key[len("ckpt/"):]), key

    record = immediate_backup_if_needed(src, backup_enabled=True, target=target, project="p", run_name="r")
    assert record is not None and record.files_copied == 4
    assert sorted(tree_files(location)) == sorted([MANIFEST_NAME, *(f"ckpt/{n}.bin" for n in "abcd")])
    manifest = verify_backup(location)
    assert {k: v["sha256"] for k, v in manifest.files.items()} == {
        f"ckpt/{n}.bin": sha256(src / f"{n}.bin") for n in "abcd"}

    # 2. b and d change; the re-backup is killed inside d.bin: every final file is a whole version
    old = {k: v["sha256"] for k, v in manifest.files.items()}
    write_random(src / "b.bin", FILE_SIZE, seed=10)
    write_random(src / "d.bin", FILE_SIZE, seed=11)
    b_copy = location / "ckpt" / "b.bin"
    b_before = b_copy.stat().st_ctime_ns
    kill_mid_copy(src, target, tmp_path, FILE_SIZE + 8 * MB, lambda: b_copy.stat().st_ctime_ns != b_before)
    assert json.loads((location / MANIFEST_NAME).read_text())["files"]["ckpt/b.bin"]["sha256"] == old["ckpt/b.bin"]
    for key, path in final_files(location).items():
        assert sha256(path) in (old[key], sha256(src / key[len("ckpt/"):])), key
    assert sha256(location / "ckpt" / "b.bin") == sha256(src / "b.bin")  # published before the kill
    assert sha256(location / "ckpt" / "d.bin") == old["ckpt/d.bin"]  # the old copy, whole

    record = immediate_backup_if_needed(src, backup_enabled=True, target=target, project="p", run_name="r")
    # b.bin was published by the killed run, but no manifest vouches for it: copied again with d.bin
    assert record is not None and (record.files_copied, record.files_skipped) == (2, 2)
    manifest = verify_backup(location)
    assert {k: v["sha256"] for k, v in manifest.files.items()} == {
        f"ckpt/{n}.bin": sha256(src / f"{n}.bin") for n in "abcd"}
    assert not [k for k in tree_files(location) if k.endswith(".nbexec-tmp")]
