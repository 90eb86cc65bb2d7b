"""Back up a set of components into one location: incremental, verified, manifest last.

A component is a directory, a file, or a SQLite database, stored under a
path of the location (``run/``, ``mlflow/mlflow.db``...). A file whose source
size and mtime match the manifest of the previous backup, and whose copy is
still the one that backup wrote (same size, mtime and ctime), is not copied
again; a copy that was changed since is hashed and, if it differs, copied
again. Files the source no longer has are dropped once the new manifest is
in place.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.backup.copy import CopiedFile, Copier, fsync_dir, is_tmp_name, remove_stale_tmp
from nbexec.backup.record import MANIFEST_NAME, BackupRecord, Manifest, utc_now
from nbexec.backup.sqlite import snapshot_sqlite
from nbexec.errors import BackupError
from nbexec.hashing import file_sha256

KINDS = ("dir", "file", "sqlite")


@dataclass(frozen=True)
class Component:
    """One thing to back up.

    Attributes:
        name: its key in the manifest (``run``, ``mlflow.db``...).
        source: the directory, file or database to copy.
        path: where it goes in the location (``/``-separated, relative).
        kind: ``dir``, ``file`` or ``sqlite``.
    """

    name: str
    source: Path
    path: str
    kind: str = "dir"


def backup_components(
    location: Path,
    components: Sequence[Component],
    *,
    source_label: str,
    meta: Mapping[str, Any] | None = None,
    durable: bool = True,
) -> BackupRecord:
    """Back ``components`` up into ``location`` and write its manifest last.

    Components of an earlier backup into the same location that are not
    named here are kept (a checkpoint and a study may be backed up apart).

    Raises:
        BackupError: a source is missing, a copy cannot be written, or a
            verification fails (the message names the file).
    """
    started = time.perf_counter()
    location = Path(location)
    _check_components(location, components)
    try:
        location.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackupError(f"cannot create the backup location {location}: {err.strerror or err}") from err
    remove_stale_tmp(location)
    previous = Manifest.load_or_empty(location)
    manifest = Manifest(
        components={k: v for k, v in previous.components.items() if k not in {c.name for c in components}},
        files={},
        meta={**previous.meta, **(meta or {})},
        created_at=utc_now(),
    )
    for name in manifest.components:
        manifest.files.update(previous.component_files(name))
    copied = skipped = nbytes = 0
    lock = threading.Lock()
    futures: list[Future[CopiedFile]] = []
    with tempfile.TemporaryDirectory(prefix="nbexec-sqlite-") as snapshots, Copier(durable=durable) as copier:
        for comp in components:
            manifest.components[comp.name] = {"source": str(comp.source), "path": comp.path, "kind": comp.kind}
            for rel_key, src in _files_of(comp, Path(snapshots)):
                dest = location / rel_key
                prev = previous.files.get(rel_key)
                st = src.stat()
                entry = _unchanged(prev, st, dest, sqlite=comp.kind == "sqlite", src=src)
                if entry is not None:
                    manifest.files[rel_key] = entry
                    skipped += 1
                    continue

                def record(done: CopiedFile, key: str = rel_key, src_st: os.stat_result = st) -> None:
                    with lock:
                        manifest.files[key] = {
                            "size": done.size,
                            "sha256": done.sha256,
                            "mtime_ns": src_st.st_mtime_ns,
                            "dest_mtime_ns": done.dest_mtime_ns,
                            "dest_ctime_ns": done.dest_ctime_ns,
                        }

                futures.append(copier.copy(src, dest, label=rel_key, on_published=record))
                copied += 1
                nbytes += st.st_size
        errors = []
        for fut in futures:
            try:
                fut.result()
            except BackupError as err:
                errors.append(str(err))
        if errors:
            raise BackupError(errors[0] if len(errors) == 1 else f"{len(errors)} files failed:\n" + "\n".join(errors))
    _check_sources_unchanged(manifest, components)
    stale = [k for k in previous.files if k not in manifest.files]
    for directory in {(location / k).parent for k in manifest.files} | {location}:
        if durable:
            fsync_dir(directory)
    manifest.verified_at = utc_now()
    write_manifest(location, manifest, durable=durable)
    for key in stale:  # only now: until the new manifest is in place, the old one needs them
        (location / key).unlink(missing_ok=True)
    return BackupRecord(
        source=source_label,
        location=str(location),
        files_copied=copied,
        files_skipped=skipped,
        bytes_copied=nbytes,
        duration_s=round(time.perf_counter() - started, 3),
        verified=True,
        verified_at=manifest.verified_at,
        manifest=str(location / MANIFEST_NAME),
        files_removed=len(stale),
    )


def write_manifest(location: Path, manifest: Manifest, *, durable: bool = True) -> Path:
    """Write the manifest atomically (temporary name, fsync, rename)."""
    path = location / MANIFEST_NAME
    tmp = location / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(manifest.to_json())
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(location)
    return path


def _check_components(location: Path, components: Sequence[Component]) -> None:
    names, paths = set(), set()
    loc = location.resolve()
    for comp in components:
        if comp.kind not in KINDS:
            raise BackupError(f"component {comp.name!r}: kind {comp.kind!r} is not one of {KINDS}")
        if comp.name in names or comp.path in paths:
            raise BackupError(f"component {comp.name!r} ({comp.path}) is given twice")
        names.add(comp.name)
        paths.add(comp.path)
        if not comp.source.exists():
            raise BackupError(f"nothing to back up: {comp.source} does not exist")
        src = comp.source.resolve()
        if comp.kind == "dir" and not comp.source.is_dir():
            raise BackupError(f"{comp.source} is not a directory")
        if comp.kind != "dir" and not comp.source.is_file():
            raise BackupError(f"{comp.source} is not a file")
        if loc == src or (comp.kind == "dir" and src in loc.parents):
            raise BackupError(
                f"the backup location {location} is inside what it backs up ({comp.source}); "
                "choose a location outside it"
            )


def _files_of(comp: Component, snapshots: Path) -> Iterator[tuple[str, Path]]:
    """``(path in the location, file to read)`` for every file of a component."""
    if comp.kind == "file":
        yield comp.path, comp.source
    elif comp.kind == "sqlite":
        snap = snapshot_sqlite(comp.source, snapshots / f"{comp.name}.snapshot")
        yield comp.path, snap
    else:
        for src in sorted(_walk(comp.source)):
            yield f"{comp.path}/{src.relative_to(comp.source).as_posix()}", src


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            path = Path(dirpath, name)
            # a link to a file is copied as the file (Hugging Face caches link weights);
            # skipped: a writer's half-written temp file, a dangling link, a socket
            if is_tmp_name(name) or not path.is_file():
                continue
            yield path


def _unchanged(
    prev: Mapping[str, Any] | None, st: os.stat_result, dest: Path, *, sqlite: bool, src: Path
) -> dict[str, Any] | None:
    """The manifest entry to keep when the file need not be copied again, else None."""
    if prev is None or prev.get("size") != st.st_size:
        return None
    try:
        dst = dest.stat()
    except FileNotFoundError:
        return None
    if dst.st_size != st.st_size:
        return None
    if sqlite:
        # a fresh snapshot has a fresh mtime: compare contents (databases are small)
        if file_sha256(src) != prev.get("sha256"):
            return None
    elif prev.get("mtime_ns") != st.st_mtime_ns:
        return None
    if (prev.get("dest_mtime_ns"), prev.get("dest_ctime_ns")) == (dst.st_mtime_ns, dst.st_ctime_ns):
        return dict(prev)
    # The copy was touched since the last backup: keep it only if it still holds the data.
    if file_sha256(dest) != prev.get("sha256"):
        return None
    return {**prev, "dest_mtime_ns": dst.st_mtime_ns, "dest_ctime_ns": dst.st_ctime_ns}


def _check_sources_unchanged(manifest: Manifest, components: Sequence[Component]) -> None:
    """A source file written to while it was copied makes the backup inconsistent."""
    for comp in components:
        if comp.kind == "sqlite":
            continue  # snapshots are consistent by construction
        for key, entry in manifest.component_files(comp.name).items():
            src = comp.source if comp.kind == "file" else comp.source / key[len(comp.path) + 1 :]
            try:
                st = src.stat()
            except FileNotFoundError:
                raise BackupError(
                    f"{src} was deleted while it was being backed up; back up again once it is written"
                ) from None
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                raise BackupError(
                    f"{src} changed while it was being backed up; back up again once it is written"
                )


__all__ = ["Component", "backup_components", "write_manifest"]
