"""Bring a backup back: checkpoint, run directory, ``mlflow.db`` and artifacts, study.

    result = nbexec.restore("/content/drive/MyDrive/nbexec/ner/ner-20261126-070102-ab12cd")
    %train config.yaml --resume {result.checkpoint}

Each component goes back where it came from (the manifest remembers) unless
told otherwise. A restore is all or nothing:

1. Plan: every path of the manifest must stay inside the backup (no ``..``,
   no absolute part, no link leading out) and every file inside its
   destination (no link in the destination leading out); anything else is
   refused as a possibly tampered backup. A file that exists with other
   contents stops the restore unless ``overwrite``.
2. Stage and verify: each file is copied to a hidden temporary name beside
   its destination, its sha256 compared with the manifest while it is read,
   and each database must open and pass ``PRAGMA integrity_check``.
3. Swap: only then is each staged file renamed into place; a replaced file
   is first renamed aside, so a failure here puts every original back.

A failure at any step leaves every destination as it was: staged files and
the folders made for them are removed, originals are back under their names.
With ``overwrite``, a database that was replaced is kept beside it
(``mlflow.db.before-restore-<time>``, with its ``-wal``/``-journal`` if any).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.backup.copy import Copier, fsync_dir, tmp_name
from nbexec.backup.record import TAMPERED, Manifest, utc_now
from nbexec.backup.sqlite import integrity_problem
from nbexec.errors import BackupError
from nbexec.hashing import file_sha256

RUN_COMPONENT = "run"
MLFLOW_DB_COMPONENT = "mlflow.db"
ARTIFACTS_COMPONENT = "mlartifacts"
STUDY_COMPONENT = "study.db"
CHECKPOINT_SUBDIR = contract.CHECKPOINT_DIR  # the run dir's checkpoint, in the run component
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")  # SQLite pairs these with a database by name
UNCHANGED = "nothing was changed"


@dataclass(frozen=True)
class RestoreResult:
    """What a restore brought back.

    Attributes:
        location: the backup it came from.
        paths: ``{component: where it was restored}``.
        files_restored: files written; ``files_skipped``: already there, identical.
        checkpoint: the restored checkpoint directory (pass it to ``--resume``), if any.
        run_dir: the restored run directory, if the backup holds one.
        tracking_uri: ``sqlite:///...`` of the restored ``mlflow.db``, if any.
        study_path: the restored Optuna ``study.db``, if any.
        meta: the manifest's ``meta`` (project, run name, MLflow run id...).
        moved_aside: databases that were replaced and kept beside them (``overwrite``).
    """

    location: str
    paths: dict[str, str]
    files_restored: int
    files_skipped: int
    bytes_restored: int
    duration_s: float
    verified_at: str
    checkpoint: str | None = None
    run_dir: str | None = None
    tracking_uri: str | None = None
    study_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    moved_aside: tuple[str, ...] = ()


def restore(
    location: str | os.PathLike[str],
    *,
    to: Mapping[str, str | os.PathLike[str]] | None = None,
    components: tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> RestoreResult:
    """Restore a backup location made by nbexec, all or nothing (see the module docstring).

    Args:
        location: the backup folder (holds ``nbexec-backup.json``).
        to: where to put components instead of where they came from, e.g.
            ``{"run": "outputs/ner-1", "mlflow.db": "mlflow.db"}``.
        components: restore only these (default: all).
        overwrite: replace files that exist with other contents (a replaced
            database is kept beside it) instead of stopping.

    Returns:
        A :class:`RestoreResult`; ``checkpoint`` is ready for ``--resume``.

    Raises:
        BackupError: the manifest is missing or has entries nbexec never writes
            (a possibly tampered backup), a file of the backup is missing or
            damaged, a database fails its integrity check, existing files are
            in the way, or a file cannot be written; every bad entry is named
            and nothing was changed.
    """
    started = time.perf_counter()
    loc = Path(location).expanduser()
    manifest = Manifest.load(loc)
    names = list(components) if components is not None else list(manifest.components)
    unknown = [n for n in [*names, *(to or {})] if n not in manifest.components]
    if unknown:
        raise BackupError(
            f"backup {loc} has no component {unknown[0]!r}; it has: {', '.join(manifest.components) or 'none'}"
        )
    targets = {name: _target(manifest, name, to or {}) for name in names}
    plan = _plan(loc, manifest, targets)
    conflicts = [item for item in plan if item.state == "conflict"]
    if conflicts and not overwrite:
        listed = "\n  ".join(f"{item.dest} (differs from the backup's {item.key})" for item in conflicts[:20])
        raise BackupError(
            f"restoring {loc} would overwrite {len(conflicts)} file(s) that differ:\n  {listed}\n"
            "nothing was written; restore elsewhere (to={...}; nbexec restore --run-dir/--mlflow-db), move them away, "
            "or pass overwrite=True (nbexec restore --overwrite)"
        )
    work = [item for item in plan if item.state != "same"]
    swap = _Swap(stamp=time.strftime("%Y%m%d-%H%M%S"))
    try:
        swap.stage(work)
        swap.commit(work)
    except BaseException as err:
        stuck = swap.rollback()
        if not isinstance(err, OSError):  # BackupError is an OSError; an interrupt goes on as it is
            raise
        raise BackupError(_failure(loc, err, stuck, targets)) from err
    moved = swap.finish()
    paths = {name: str(target) for name, target in targets.items()}
    _forget_tracking_store(paths.get(MLFLOW_DB_COMPONENT))
    run_dir = paths.get(RUN_COMPONENT)
    checkpoint = _checkpoint_of(manifest, names, paths)
    db = paths.get(MLFLOW_DB_COMPONENT)
    return RestoreResult(
        location=str(loc),
        paths=paths,
        files_restored=len(work),
        files_skipped=len(plan) - len(work),
        bytes_restored=sum(int(item.entry["size"]) for item in work),
        duration_s=round(time.perf_counter() - started, 3),
        verified_at=utc_now(),
        checkpoint=checkpoint,
        run_dir=run_dir,
        tracking_uri=f"sqlite:///{db}" if db else None,
        study_path=paths.get(STUDY_COMPONENT),
        meta=dict(manifest.meta),
        moved_aside=tuple(str(p) for p in moved),
    )


@dataclass(frozen=True)
class _Item:
    """One file to restore: its key in the backup, where it is read and written, and what is there now."""

    key: str
    src: Path
    dest: Path
    entry: Mapping[str, Any]
    state: str  # new | same | conflict
    database: bool


def _target(manifest: Manifest, name: str, to: Mapping[str, str | os.PathLike[str]]) -> Path:
    """Where a component goes: ``to[name]``, else where it came from.

    Raises:
        BackupError: it would go back to a source that is not an absolute path
            (nbexec records absolute ones; a relative one would land wherever the restore runs).
    """
    if name in to:
        return Path(to[name]).expanduser().absolute()
    source = manifest.components[name]["source"]
    if not os.path.isabs(source):
        raise BackupError(
            f"backup component {name!r} would go back to {source!r}, which is not an absolute path; "
            f"{TAMPERED}; {UNCHANGED}. Give its destination (to={{{name!r}: ...}}; nbexec restore "
            "--run-dir/--mlflow-db) or restore from a backup you trust"
        )
    return Path(source)


def _plan(loc: Path, manifest: Manifest, targets: Mapping[str, Path]) -> list[_Item]:
    """Every file to restore, checked before anything is written.

    Raises:
        BackupError: a file leads out of the backup or out of its destination, is
            missing or of the wrong size, or something is in the way (all named).
    """
    backup_root = os.path.realpath(loc)
    plan: list[_Item] = []
    outside, missing, damaged, blocked = [], [], [], []
    claimed: dict[str, str] = {}
    for name, target in targets.items():
        comp = manifest.components[name]
        target_root = os.path.realpath(target)
        for key, entry in sorted(manifest.component_files(name).items()):
            src = loc / key
            real_src = os.path.realpath(src)
            if not _within(real_src, backup_root):
                outside.append(f"{key!r} leads to {real_src}, outside the backup {loc} (through a link)")
                continue
            if not os.path.isfile(real_src):
                missing.append(key)
                continue
            size = os.stat(real_src).st_size
            if size != entry["size"]:
                damaged.append(f"{key}: {size} bytes, the manifest says {entry['size']}")
                continue
            dest = target if comp["kind"] != "dir" else target / key[len(comp["path"]) + 1 :]
            real_dest = os.path.realpath(dest)
            problem = _in_the_way(dest, real_dest, target_root, target)
            if problem is None and real_dest in claimed:
                problem = f"{dest}: both {claimed[real_dest]} and {key} would be restored there"
            if problem:
                blocked.append(problem)
                continue
            claimed[real_dest] = key
            state = "new"
            if os.path.lexists(dest):
                same = dest.is_file() and dest.stat().st_size == entry["size"] and file_sha256(dest) == entry["sha256"]
                state = "same" if same else "conflict"
            plan.append(_Item(key, src, dest, entry, state, comp["kind"] == "sqlite"))
    if outside:
        raise BackupError(
            f"backup {loc} cannot be restored safely: {len(outside)} file(s) lead outside it:\n  "
            + "\n  ".join(outside[:10]) + f"\n{TAMPERED}; {UNCHANGED}. Restore from a backup you trust"
        )
    if missing or damaged:
        listed = "\n  ".join([*(f"{k}: missing" for k in missing[:10]), *damaged[:10]])
        raise BackupError(
            f"backup {loc} is incomplete or damaged:\n  {listed}\n{UNCHANGED}; restore from another backup, "
            "or back the source up again"
        )
    if blocked:
        raise BackupError(
            f"cannot restore {loc}: {len(blocked)} destination(s) are not safe to write:\n  "
            + "\n  ".join(blocked[:10])
            + f"\n{UNCHANGED}; move them away, or restore elsewhere (to={{...}}; nbexec restore --run-dir/--mlflow-db)"
        )
    return plan


def _within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _in_the_way(dest: Path, real_dest: str, target_root: str, target: Path) -> str | None:
    """Why ``dest`` cannot be written safely, or None."""
    if not _within(real_dest, target_root):
        return f"{dest} resolves to {real_dest}, outside {target} (a link in the destination leads out)"
    if os.path.isdir(dest):
        return f"{dest} is a folder where a file goes"
    parent = dest.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not os.path.isdir(parent):
        return f"{parent} is a file where a folder goes"
    return None


class _Swap:
    """Stage files beside their destinations, swap them in, and undo all of it on failure."""

    def __init__(self, *, stamp: str) -> None:
        self.stamp = stamp
        self.created_dirs: list[Path] = []  # in the order made; removed in reverse
        self.staged: dict[Path, Path] = {}  # destination -> verified copy beside it
        self.undo: list[tuple[Path, Path | None]] = []  # (destination, original moved aside or None), in order
        self.kept: list[Path] = []  # replaced databases, kept beside them

    def stage(self, items: list[_Item]) -> None:
        """Copy every file beside its destination, verified; check every database.

        Raises:
            BackupError: a file does not match the manifest, cannot be written,
                or a database is not whole.
        """
        with Copier() as copier:  # leaving the block waits for every copy still being published
            futures = []
            for item in items:
                self._make_parents(item.dest)
                staged = self.staged[item.dest] = tmp_name(item.dest)
                futures.append(copier.copy(item.src, staged, label=item.key, expected_sha256=item.entry["sha256"]))
            for fut in futures:
                fut.result()
        for item in items:
            if item.database:
                problem = _database_problem(self.staged[item.dest])
                if problem:
                    raise BackupError(f"{item.key}: the database in the backup {problem}; this copy is damaged")

    def commit(self, items: list[_Item]) -> None:
        """Rename every staged file into place; a file already there is moved aside first.

        Raises:
            BackupError: a rename failed (what was done so far is in ``undo``).
        """
        for item in items:
            try:
                original = None
                if os.path.lexists(item.dest):
                    original = self._aside(item.dest) if item.database else tmp_name(item.dest)
                    os.replace(item.dest, original)
                self.undo.append((item.dest, original))
                if item.database and original is not None:
                    self.kept.append(original)
                    # a -wal or -journal left beside the old database belongs to it, not to the restored one
                    for suffix in SQLITE_SIDECARS:
                        sidecar = Path(f"{item.dest}{suffix}")
                        if os.path.lexists(sidecar):
                            os.replace(sidecar, f"{original}{suffix}")
                            self.undo.append((sidecar, Path(f"{original}{suffix}")))
                os.replace(self.staged[item.dest], item.dest)
                del self.staged[item.dest]
            except OSError as err:
                raise BackupError(f"cannot put {item.key} in place at {item.dest}: {err.strerror or err}") from err

    def finish(self) -> list[Path]:
        """After a complete swap: drop replaced files (databases are kept); returns the kept databases."""
        keep = {Path(f"{db}{s}") for db in self.kept for s in ("", *SQLITE_SIDECARS)}
        for _dest, original in self.undo:
            if original is not None and original not in keep:
                with suppress(OSError):  # a leftover hidden file is no reason to fail a finished restore
                    original.unlink(missing_ok=True)
        for directory in {dest.parent for dest, _ in self.undo}:
            fsync_dir(directory)
        return list(self.kept)

    def rollback(self) -> list[str]:
        """Put every original back and remove everything staged or made; returns what could not be undone."""
        stuck = []
        for dest, original in reversed(self.undo):
            try:
                if original is None:
                    dest.unlink(missing_ok=True)
                else:
                    os.replace(original, dest)
            except OSError as err:
                where = f"; the original is at {original}" if original is not None else ""
                stuck.append(f"{dest}: {err.strerror or err}{where}")
        self.undo.clear()
        self.kept.clear()
        for staged in self.staged.values():
            for path in (staged, *(Path(f"{staged}{s}") for s in SQLITE_SIDECARS)):
                try:
                    path.unlink(missing_ok=True)
                except OSError as err:
                    stuck.append(f"{path}: a staged copy is left ({err.strerror or err})")
        self.staged.clear()
        for directory in reversed(self.created_dirs):
            try:
                directory.rmdir()
            except OSError as err:
                stuck.append(f"{directory}: the folder made for the restore is left ({err.strerror or err})")
        self.created_dirs.clear()
        return stuck

    def _make_parents(self, dest: Path) -> None:
        """Make the missing folders above ``dest``, remembering each so a failure removes them."""
        missing = []
        parent = dest.parent
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir()
            self.created_dirs.append(directory)

    def _aside(self, dest: Path) -> Path:
        """A free ``<name>.before-restore-<time>[-n]`` beside ``dest`` (two restores in a second keep both)."""
        n, candidate = 1, dest.with_name(f"{dest.name}.before-restore-{self.stamp}")
        while any(os.path.lexists(f"{candidate}{s}") for s in ("", *SQLITE_SIDECARS)):
            n += 1
            candidate = dest.with_name(f"{dest.name}.before-restore-{self.stamp}-{n}")
        return candidate


def _database_problem(path: Path) -> str | None:
    """Why the SQLite file at ``path`` is not a usable database, or None."""
    problem = integrity_problem(path)
    if problem:
        return f"fails PRAGMA integrity_check ({problem})"
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as err:
        return f"cannot be opened ({err})"
    return None if tables else "holds no tables"


def _failure(loc: Path, err: BaseException, stuck: list[str], targets: Mapping[str, Path]) -> str:
    """The message of a restore that failed after its plan: what failed, and that nothing changed (or what did)."""
    where = ", ".join(str(t) for t in targets.values())
    verb = "is" if len(targets) == 1 else "are"
    if stuck:
        return (
            f"restoring {loc} failed: {err}\nand undoing it failed too; put these back by hand:\n  "
            + "\n  ".join(stuck)
        )
    return (
        f"restoring {loc} failed: {err}\n{UNCHANGED}: {where} {verb} as before the restore (every file is "
        "verified before any is put in place, and anything put in place is taken back); fix the cause, or "
        "restore from another backup"
    )


def _checkpoint_of(manifest: Manifest, names: list[str], paths: Mapping[str, str]) -> str | None:
    if RUN_COMPONENT in names:
        ckpt = Path(paths[RUN_COMPONENT]) / CHECKPOINT_SUBDIR
        return str(ckpt) if ckpt.is_dir() else None
    for name in names:  # an immediate backup of a checkpoint directory
        if manifest.components[name]["kind"] == "dir" and name not in (ARTIFACTS_COMPONENT,):
            return paths[name]
    return None


def _forget_tracking_store(db: str | None) -> None:
    """A database replaced under a live MLflow in this process must not be read through old connections."""
    if db is None or "mlflow" not in sys.modules:
        return
    from nbexec.tracking.store import forget_database

    forget_database(f"sqlite:///{db}")


__all__ = ["restore", "RestoreResult"]
