"""What a backup left behind: the :class:`BackupRecord` and the manifest at the destination.

The manifest (``nbexec-backup.json``, written last) lists every file of the
backup with its size and sha256, grouped in components (``run``, ``mlflow.db``,
``mlartifacts``, a checkpoint ...) that remember where they came from, so a
restore can put each one back.

A manifest is read as untrusted input (a backup on a shared Drive can be
edited by someone else): every path in it must be one nbexec writes — relative,
``/``-separated, without ``..``, ``.`` or empty parts — or it is refused before
anything reads or writes through it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbexec.errors import BackupError

MANIFEST_NAME = "nbexec-backup.json"
MANIFEST_FORMAT = "nbexec-backup"
MANIFEST_VERSION = 1
KINDS = ("dir", "file", "sqlite")
TAMPERED = "the backup may have been tampered with (nbexec never writes such entries)"


class BackupWarning(UserWarning):
    """A backup after a run failed; the training result itself is unaffected."""


@dataclass(frozen=True)
class BackupRecord:
    """The outcome of one backup.

    Attributes:
        source: what was backed up (a directory or file; a run's directory).
        location: the destination directory (holds the copy and the manifest).
        files_copied: files written this time.
        files_skipped: files already there unchanged (incremental backup).
        bytes_copied: bytes written this time.
        duration_s: wall time of the whole backup, verification included.
        verified: every file's sha256 was checked after the copy.
        verified_at: ISO-8601 UTC time of the verification.
        manifest: path of the manifest at the destination.
        files_removed: files dropped from the backup because the source no longer has them.
        notes: what was left out and why (e.g. a tracking server is not a file to copy).
    """

    source: str
    location: str
    files_copied: int
    files_skipped: int
    bytes_copied: int
    duration_s: float
    verified: bool
    verified_at: str
    manifest: str
    files_removed: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``from_dict`` reads it back)."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BackupRecord:
        """Read :meth:`to_dict`'s output; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["notes"] = tuple(values.get("notes") or ())
        return cls(**values)

    def summary(self) -> str:
        """One line: where, what, and that it was verified."""
        mb = self.bytes_copied / 1e6
        state = f"verified {self.verified_at}" if self.verified else "NOT verified"
        return (
            f"{self.location} ({self.files_copied} copied, {self.files_skipped} unchanged, "
            f"{mb:.1f} MB in {self.duration_s:.1f} s; {state})"
        )


@dataclass
class Manifest:
    """The manifest of one backup location (see the module docstring).

    Attributes:
        components: ``{name: {"source": abs path, "path": path in the location,
            "kind": "dir" | "file" | "sqlite"}}``.
        files: ``{path in the location: {"size", "sha256", "mtime_ns",
            "dest_mtime_ns", "dest_ctime_ns"}}``.
        meta: what the backup was of (project, run name, MLflow run id...).
    """

    components: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    verified_at: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "created_at": self.created_at,
                "verified_at": self.verified_at,
                "meta": self.meta,
                "components": self.components,
                "files": dict(sorted(self.files.items())),
            },
            indent=1,
        )

    @classmethod
    def load(cls, location: str | os.PathLike[str]) -> Manifest:
        """Read the manifest of a backup location.

        Raises:
            BackupError: there is none, or it is not an nbexec manifest.
        """
        path = Path(location) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupError(
                f"{location} is not a complete nbexec backup: {MANIFEST_NAME} is missing "
                "(the backup never finished; run it again)"
            ) from None
        except (OSError, ValueError) as err:
            raise BackupError(f"cannot read the backup manifest {path}: {err}") from err
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise BackupError(f"{path} is not an nbexec backup manifest")
        if data.get("version", 0) > MANIFEST_VERSION:
            raise BackupError(
                f"{path} was written by a newer nbexec (manifest version {data.get('version')}); upgrade nbexec"
            )
        problems = manifest_problems(data)
        if problems:
            raise BackupError(
                f"{path} cannot be trusted: {len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'}:\n  "
                + "\n  ".join(problems[:10])
                + f"\n{TAMPERED}; nothing was changed. Restore from a backup you trust, or back the source up again"
            )
        return cls(
            components=dict(data.get("components") or {}),
            files=dict(data.get("files") or {}),
            meta=dict(data.get("meta") or {}),
            created_at=str(data.get("created_at") or ""),
            verified_at=str(data.get("verified_at") or ""),
        )

    @classmethod
    def load_or_empty(cls, location: Path) -> Manifest:
        """The location's manifest, or an empty one (first backup, or an unreadable one)."""
        if not (location / MANIFEST_NAME).is_file():
            return cls()
        try:
            return cls.load(location)
        except BackupError:
            return cls()  # everything is copied again and a good manifest replaces it

    def component_files(self, name: str) -> dict[str, dict[str, Any]]:
        """The files of one component, keyed by their path in the location."""
        comp = self.components.get(name)
        if comp is None:
            return {}
        prefix = comp["path"]
        return {k: v for k, v in self.files.items() if k == prefix or k.startswith(prefix + "/")}


def manifest_problems(data: Mapping[str, Any]) -> list[str]:
    """Every entry of a parsed manifest that nbexec would never write, named (empty: all is well)."""
    problems = []
    components = data.get("components") or {}
    files = data.get("files") or {}
    if not isinstance(components, dict) or not isinstance(files, dict):
        return ["'components' and 'files' must be JSON objects"]
    for name, comp in components.items():
        if not isinstance(comp, dict):
            problems.append(f"component {name!r} is not a JSON object")
            continue
        kind, source, where = comp.get("kind"), comp.get("source"), comp.get("path")
        if kind not in KINDS:
            problems.append(f"component {name!r}: kind {kind!r} is not one of {KINDS}")
        problem = path_problem(where)
        if problem:
            problems.append(f"component {name!r}: path {where!r} {problem}")
        if not isinstance(source, str) or "\0" in source:  # whether it is absolute matters to restores only
            problems.append(f"component {name!r}: source {source!r} is not a path")
    for key, entry in files.items():
        problem = path_problem(key)
        if problem:
            problems.append(f"file {key!r} {problem}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"file {key!r}: its entry is not a JSON object")
            continue
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"file {key!r}: size {size!r} is not a byte count")
        if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
            problems.append(f"file {key!r}: sha256 {digest!r} is not a sha256 hex digest")
    return problems


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a path nbexec writes in a backup location, or None when it is one.

    Such a path is relative and ``/``-separated, with no ``..``, ``.`` or empty
    part (``run//etc/x`` would join to ``/etc/x``) and no NUL byte.
    """
    if not isinstance(path, str) or not path:
        return "is not a relative path"
    if "\0" in path:
        return "holds a NUL byte"
    if path.startswith("/"):
        return "is absolute (it would point outside the backup)"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if "" in parts:
        return "has an empty part ('run//x' joins as the absolute '/x')"
    if "." in parts:
        return "has a '.' part"
    return None


def utc_now() -> str:
    """The current time as ISO-8601 UTC with milliseconds (``2026-11-26T07:01:02.123Z``)."""
    now = datetime.fromtimestamp(time.time(), tz=timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


__all__ = ["BackupRecord", "BackupWarning", "Manifest", "MANIFEST_NAME", "TAMPERED", "manifest_problems",
           "path_problem", "utc_now"]
