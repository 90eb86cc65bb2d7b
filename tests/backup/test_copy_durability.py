"""Durable copies: each file is flushed to disk before it is renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbexec.backup import copy as copy_mod
from nbexec.backup.copy import Copier


def _record_syncs_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
        events.append(("replace", os.fspath(src)))
        real_replace(src, dest)

    monkeypatch.setattr(copy_mod.os, "fsync", fsync)
    monkeypatch.setattr(copy_mod.os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor's file")
@pytest.mark.parametrize("durable", [True, False])
def test_each_file_is_synced_before_its_rename_only_when_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("model.pt", 3 * copy_mod.CHUNK + 5), ("optimizer.pt", copy_mod.CHUNK // 2)):
        (src / name).write_bytes(os.urandom(size))
    events = _record_syncs_and_renames(monkeypatch)

    with Copier(durable=durable) as copier:
        futures = [copier.copy(src / n, tmp_path / "dest" / n, label=n) for n in ("model.pt", "optimizer.pt")]
        results = [f.result() for f in futures]

    renamed = [path for kind, path in events if kind == "replace"]
    assert len(renamed) == 2 and all(copy_mod.is_tmp_name(Path(p).name) for p in renamed)
    synced = [path for kind, path in events if kind == "fsync"]
    if durable:
        for tmp in renamed:  # its data reached the disk before its name became final
            assert events.index(("fsync", tmp)) < events.index(("replace", tmp))
    else:
        assert synced == []
    for name, result in zip(("model.pt", "optimizer.pt"), results):
        assert (tmp_path / "dest" / name).read_bytes() == (src / name).read_bytes()
        assert result.size == (src / name).stat().st_size
