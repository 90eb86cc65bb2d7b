"""immediate_backup_if_needed: manifest, verification, atomicity, incremental copies, restore of a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nbexec.backup import BackupRecord, immediate_backup_if_needed, restore, verify_backup
from nbexec.backup import copy as backup_copy
from nbexec.backup.record import MANIFEST_NAME
from nbexec.errors import BackupError

from .conftest import MB, make_checkpoint, same_bytes, sha256, tree_files, write_random


def backup(src: Path, target: Path, **kw: object) -> BackupRecord:
    record = immediate_backup_if_needed(src, backup_enabled=True, target=target, project="proj",
                                        run_name="run-1", **kw)
    assert record is not None
    return record


def test_big_multi_file_checkpoint_is_complete_verified_and_restores_byte_identical(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt", big=200 * MB)
    record = backup(src, tmp_path / "backups")

    location = tmp_path / "backups" / "proj" / "run-1"
    assert record.location == str(location)
    assert record.manifest == str(location / MANIFEST_NAME)
    assert record.verified and record.verified_at.endswith("Z")
    src_files = tree_files(src)
    assert record.files_copied == len(src_files) == 5 and record.files_skipped == 0
    assert record.bytes_copied == sum(p.stat().st_size for p in src_files.values())
    assert record.source == str(src)

    manifest = json.loads(Path(record.manifest).read_text())
    assert manifest["verified_at"] == record.verified_at
    assert manifest["components"] == {"ckpt": {"source": str(src), "path": "ckpt", "kind": "dir"}}
    assert sorted(manifest["files"]) == sorted(f"ckpt/{rel}" for rel in src_files)
    for rel, path in src_files.items():
        entry = manifest["files"][f"ckpt/{rel}"]
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == sha256(path)
        assert same_bytes(path, location / "ckpt" / rel)
    assert verify_backup(location).files == manifest["files"]
    # nothing but the copy and the manifest (no temporary files left)
    assert sorted(tree_files(location)) == sorted([MANIFEST_NAME, *(f"ckpt/{rel}" for rel in src_files)])

    restored = restore(location, to={"ckpt": tmp_path / "restored"})
    assert restored.files_restored == 5 and restored.checkpoint == str(tmp_path / "restored")
    assert sorted(tree_files(tmp_path / "restored")) == sorted(src_files)
    for rel, path in src_files.items():
        assert same_bytes(path, tmp_path / "restored" / rel), rel


def test_flipped_byte_in_the_backup_fails_verification_naming_the_file(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    record = backup(src, tmp_path / "backups")
    damaged = Path(record.location) / "ckpt" / "optimizer.pt"
    st = damaged.stat()
    with open(damaged, "r+b") as fh:  # same size, same mtime: only the contents tell
        fh.seek(MB + 3)
        byte = fh.read(1)
        fh.seek(MB + 3)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))

    with pytest.raises(BackupError, match=r"ckpt/optimizer\.pt") as info:
        verify_backup(record.location)
    assert "model.pt" not in str(info.value)  # only the damaged file is named
    with pytest.raises(BackupError, match=r"ckpt/optimizer\.pt.*does not match the manifest"):
        restore(record.location, to={"ckpt": tmp_path / "restored"})
    assert not (tmp_path / "restored" / "optimizer.pt").exists()

    # the next backup notices the copy was touched (ctime), hashes it and heals it
    again = backup(src, tmp_path / "backups")
    assert again.files_copied == 1 and again.files_skipped == 4
    verify_backup(record.location)


def test_second_backup_copies_nothing_and_a_touched_file_is_copied_alone(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    first = backup(src, tmp_path / "backups")
    assert first.files_copied == 5

    second = backup(src, tmp_path / "backups")
    assert (second.files_copied, second.files_skipped, second.bytes_copied) == (0, 5, 0)
    assert second.verified_at >= first.verified_at

    os.utime(src / "trainer_state.json")  # touched: same bytes, new mtime
    third = backup(src, tmp_path / "backups")
    assert (third.files_copied, third.files_skipped) == (1, 4)
    assert third.bytes_copied == (src / "trainer_state.json").stat().st_size

    (src / "trainer_state.json").write_text(json.dumps({"epoch": 2, "global_step": 20}))
    (src / "tokenizer" / "vocab.txt").unlink()
    fourth = backup(src, tmp_path / "backups")
    assert (fourth.files_copied, fourth.files_skipped, fourth.files_removed) == (1, 3, 1)
    location = Path(fourth.location)
    assert json.loads((location / "ckpt" / "trainer_state.json").read_text())["epoch"] == 2
    assert not (location / "ckpt" / "tokenizer" / "vocab.txt").exists()
    manifest = verify_backup(location)
    assert "ckpt/tokenizer/vocab.txt" not in manifest.files
    assert manifest.files["ckpt/trainer_state.json"]["sha256"] == sha256(src / "trainer_state.json")


def test_a_copy_that_reads_back_wrong_is_never_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The destination stores a flipped bit: verification catches it; no final file, no manifest."""
    src = make_checkpoint(tmp_path / "ckpt")
    real_write = backup_copy.Copier._write_chunk

    def corrupting(self, src_fd: int, fd: int, data: memoryview, offset: int) -> None:  # noqa: ANN001
        real_write(self, src_fd, fd, data, offset)
        if len(data) > 100:  # the disk flips a bit of what was written
            byte = os.pread(src_fd, 1, offset + 100)
            os.pwrite(fd, bytes([byte[0] ^ 0x80]), offset + 100)

    monkeypatch.setattr(backup_copy.Copier, "_write_chunk", corrupting)
    with pytest.raises(BackupError, match=r"verification failed for ckpt/(model|optimizer)\.pt"):
        backup(src, tmp_path / "backups")
    location = tmp_path / "backups" / "proj" / "run-1"
    assert not (location / MANIFEST_NAME).exists()
    left = tree_files(location)
    assert "ckpt/model.pt" not in left and "ckpt/optimizer.pt" not in left
    assert not [k for k in left if k.endswith(".nbexec-tmp")]


def test_a_single_file_and_backups_off(tmp_path: Path) -> None:
    model = write_random(tmp_path / "best_model.pt", 3 * MB + 5)
    assert immediate_backup_if_needed(model, backup_enabled=False, target=tmp_path / "backups") is None
    assert not (tmp_path / "backups").exists()

    record = immediate_backup_if_needed(model, backup_enabled=True, target=tmp_path / "backups")
    assert record is not None and record.files_copied == 1
    # defaults: project "default", run name from the source
    assert record.location == str(tmp_path / "backups" / "default" / "best_model.pt")
    assert same_bytes(model, Path(record.location) / "best_model.pt")
    assert BackupRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    with pytest.raises(BackupError, match=r"does not exist"):
        immediate_backup_if_needed(tmp_path / "missing", backup_enabled=True, target=tmp_path / "b1")
    with pytest.raises(BackupError, match=r"no target.*--backup PATH.*--backup drive"):
        immediate_backup_if_needed(src, backup_enabled=True)
    with pytest.raises(BackupError, match=r"inside what it backs up"):
        immediate_backup_if_needed(src, backup_enabled=True, target=src / "backups")
    with pytest.raises(BackupError, match=r"only be mounted on Colab.*--backup PATH"):
        immediate_backup_if_needed(src, backup_enabled=True, backup_to_drive=True)
    assert not (tmp_path / "b1").exists() and not (src / "backups").exists()
    with pytest.raises(BackupError, match=r"not a complete nbexec backup"):
        verify_backup(tmp_path)


def test_restore_never_overwrites_unless_asked(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    record = backup(src, tmp_path / "backups")
    (src / "trainer_state.json").write_text("changed since the backup")
    with pytest.raises(BackupError, match=r"(?s)would overwrite 1 file.*trainer_state\.json.*nothing was written"):
        restore(record.location)
    assert (src / "trainer_state.json").read_text() == "changed since the backup"

    (src / "model.pt").unlink()
    result = restore(record.location, overwrite=True)
    assert result.files_restored == 2 and result.files_skipped == 3  # identical files are left alone
    assert json.loads((src / "trainer_state.json").read_text())["epoch"] == 1
    assert sha256(src / "model.pt") == json.loads(Path(record.manifest).read_text())["files"]["ckpt/model.pt"]["sha256"]


def test_without_kernel_copies_the_hashed_bytes_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across filesystems (Drive's FUSE mount) copy_file_range fails with EXDEV: the same backup, from user space."""
    import errno

    calls = []

    def cross_device(*args: object) -> int:
        calls.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    src = make_checkpoint(tmp_path / "ckpt", big=20 * MB + 3)
    record = backup(src, tmp_path / "backups")
    assert len(calls) == 1  # tried once, then user-space writes for the rest of the backup
    for rel, path in tree_files(src).items():
        assert same_bytes(path, Path(record.location) / "ckpt" / rel), rel
    verify_backup(record.location)


def test_linked_files_are_backed_up_as_their_contents(tmp_path: Path) -> None:
    """Hugging Face caches keep weights as links into a blob store: the backup must hold the bytes."""
    blob = write_random(tmp_path / "blobs" / "abc123", 2 * MB)
    src = tmp_path / "snapshot"
    src.mkdir()
    (src / "model.safetensors").symlink_to(blob)
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    record = backup(src, tmp_path / "backups")
    assert record.files_copied == 1
    copy = Path(record.location) / "snapshot" / "model.safetensors"
    assert not copy.is_symlink() and same_bytes(blob, copy)


def test_an_unwritable_spot_in_the_location_is_a_backup_error(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "ckpt")
    location = tmp_path / "backups" / "proj" / "run-1"
    location.mkdir(parents=True)
    (location / "ckpt").write_text("a file where the checkpoint's folder goes")
    with pytest.raises(BackupError, match=r"cannot copy ckpt/"):
        backup(src, tmp_path / "backups")
    assert not (location / MANIFEST_NAME).exists()
