"""Bring a backup back: checkpoint, run directory, ``mlflow.db`` and artifacts, study.

    result = nbexec.restore("/content/drive/MyDrive/nbexec/ner/ner-20261126-070102-ab12cd")
    %train config.yaml --resume {result.checkpoint}

Every file is checked against the manifest while it is read from the backup,
written under a temporary name, read back, and renamed into place. Each
component goes back where it came from (the manifest remembers) unless told
otherwise. Nothing is overwritten unless asked: a file that exists with other
contents stops the restore before anything is written; with ``overwrite``, a
database that is replaced is first moved aside (``mlflow.db.before-restore-<time>``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbexec.backup.copy import Copier, sha256_file
from nbexec.backup.record import Manifest, utc_now
from nbexec.errors import BackupError

RUN_COMPONENT = "run"
MLFLOW_DB_COMPONENT = "mlflow.db"
ARTIFACTS_COMPONENT = "mlartifacts"
STUDY_COMPONENT = "study.db"
CHECKPOINT_SUBDIR = "checkpoint"


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
        moved_aside: files that were in the way and were renamed (``overwrite``).
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
    """Restore a backup location made by nbexec, verified against its manifest.

    Args:
        location: the backup folder (holds ``nbexec-backup.json``).
        to: where to put components instead of where they came from, e.g.
            ``{"run": "outputs/ner-1", "mlflow.db": "mlflow.db"}``.
        components: restore only these (default: all).
        overwrite: replace files that exist with other contents (databases
            are moved aside first) instead of stopping.

    Returns:
        A :class:`RestoreResult`; ``checkpoint`` is ready for ``--resume``.

    Raises:
        BackupError: no manifest, a file of the backup is missing or damaged
            (named), or existing files are in the way (all named; nothing was written).
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
    plan = _plan(loc, manifest, names, to or {})
    conflicts = [(key, dest) for key, _src, dest, _entry, state in plan if state == "conflict"]
    if conflicts and not overwrite:
        listed = "\n  ".join(f"{dest} (differs from the backup's {key})" for key, dest in conflicts[:20])
        raise BackupError(
            f"restoring {loc} would overwrite {len(conflicts)} file(s) that differ:\n  {listed}\n"
            "nothing was written; restore elsewhere (to={...}; nbexec restore --run-dir/--mlflow-db), move them away, "
            "or pass overwrite=True (nbexec restore --overwrite)"
        )
    moved = []
    for key, _src, dest, _entry, state in plan:
        if state == "conflict" and _is_database(manifest, key):
            aside = dest.with_name(f"{dest.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(dest, aside)
            moved.append(str(aside))
    restored = skipped = nbytes = 0
    with Copier() as copier:
        futures = []
        for key, src, dest, entry, state in plan:
            if state == "same":
                skipped += 1
                continue
            futures.append(copier.copy(src, dest, label=key, expected_sha256=entry["sha256"]))
            restored += 1
            nbytes += int(entry["size"])
        for fut in futures:
            fut.result()
    paths = {name: str(_target(manifest, name, to or {})) for name in names}
    _forget_tracking_store(paths.get(MLFLOW_DB_COMPONENT))
    run_dir = paths.get(RUN_COMPONENT)
    checkpoint = _checkpoint_of(manifest, names, paths)
    db = paths.get(MLFLOW_DB_COMPONENT)
    return RestoreResult(
        location=str(loc),
        paths=paths,
        files_restored=restored,
        files_skipped=skipped,
        bytes_restored=nbytes,
        duration_s=round(time.perf_counter() - started, 3),
        verified_at=utc_now(),
        checkpoint=checkpoint,
        run_dir=run_dir,
        tracking_uri=f"sqlite:///{db}" if db else None,
        study_path=paths.get(STUDY_COMPONENT),
        meta=dict(manifest.meta),
        moved_aside=tuple(moved),
    )


def _target(manifest: Manifest, name: str, to: Mapping[str, str | os.PathLike[str]]) -> Path:
    comp = manifest.components[name]
    return Path(to[name]).expanduser().absolute() if name in to else Path(comp["source"])


def _plan(
    loc: Path, manifest: Manifest, names: list[str], to: Mapping[str, str | os.PathLike[str]]
) -> list[tuple[str, Path, Path, dict[str, Any], str]]:
    """``(key, file in the backup, destination, manifest entry, new|same|conflict)`` per file."""
    plan = []
    missing = []
    for name in names:
        comp = manifest.components[name]
        target = _target(manifest, name, to)
        for key, entry in sorted(manifest.component_files(name).items()):
            src = loc / key
            if not src.is_file():
                missing.append(key)
                continue
            dest = target if comp["kind"] != "dir" else target / key[len(comp["path"]) + 1 :]
            state = "new"
            if dest.exists():
                same = dest.is_file() and dest.stat().st_size == entry["size"] and sha256_file(dest) == entry["sha256"]
                state = "same" if same else "conflict"
            plan.append((key, src, dest, entry, state))
    if missing:
        raise BackupError(
            f"backup {loc} is incomplete: {', '.join(missing[:10])} missing; nothing was restored"
        )
    return plan


def _is_database(manifest: Manifest, key: str) -> bool:
    return any(c["kind"] == "sqlite" and c["path"] == key for c in manifest.components.values())


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
