"""The lineage record of a trained model: data -> study -> best trial -> final run -> checkpoint -> backup.

Plain, JSON-able data. Written as ``lineage.json`` in the run directory,
beside ``checkpoint/``; :func:`nbexec.lineage.extract_lineage_from_best_model`
rebuilds it from that directory and the study file, and
:func:`nbexec.lineage.apply_lineage_tags` writes it to MLflow as tags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.hashing import file_sha256, listing_sha256
from nbexec.render.lineage import Row, lineage_rows, render_lineage_html, render_lineage_text

LINEAGE_VERSION = 1


@dataclass(frozen=True)
class DataLineage:
    """The dataset: where it was and its content fingerprint (see :mod:`nbexec.hpo.fingerprint`)."""

    path: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class StudyLineage:
    """The Optuna study the config came from."""

    name: str | None = None
    storage: str | None = None
    key_hash: str | None = None
    trials_run: int | None = None
    best_value: float | None = None
    objective: str | None = None
    direction: str | None = None
    data_fingerprint: str | None = None
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None


@dataclass(frozen=True)
class TrialLineage:
    """The study's best trial, whose params the final run trained with."""

    number: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    key_hash: str | None = None
    value: float | None = None
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class RunLineage:
    """The final training run: what ran, with which code, where."""

    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    run_name: str | None = None
    run_dir: str | None = None
    config_hash: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    nbexec_version: str | None = None
    torch_version: str | None = None
    hardware: str | None = None


@dataclass(frozen=True)
class CheckpointLineage:
    """The checkpoint directory: total size, per-file sha256 and their combined sha256."""

    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupLineage:
    """The verified backup copy of the checkpoint (the backup record's part)."""

    location: str | None = None
    verified_at: str | None = None
    manifest: str | None = None


def git_state(git: Mapping[str, str]) -> tuple[str | None, bool | None]:
    """``(git_commit, git_dirty)`` of a :class:`RunLineage` from :func:`nbexec.tracking.tags.git_tags`; None: unknown."""
    return git.get("nbexec.git_commit"), {"true": True, "false": False}.get(git.get("nbexec.git_dirty", ""))


SECTIONS: dict[str, type] = {
    "data": DataLineage,
    "study": StudyLineage,
    "best_trial": TrialLineage,
    "final_run": RunLineage,
    "checkpoint": CheckpointLineage,
    "backup": BackupLineage,
}


@dataclass(frozen=True)
class Lineage:
    """Where a model came from. A section is None when it does not apply or is unknown.

    Attributes:
        missing: what could not be found, in words (``"study: outputs/hpo/study.db does not exist"``).
    """

    data: DataLineage | None = None
    study: StudyLineage | None = None
    best_trial: TrialLineage | None = None
    final_run: RunLineage | None = None
    checkpoint: CheckpointLineage | None = None
    backup: BackupLineage | None = None
    missing: tuple[str, ...] = ()

    def __repr__(self) -> str:
        run = self.final_run.run_name if self.final_run else "unknown run"
        trial = self.best_trial
        origin = f" from trial {trial.number} of study {self.study.name!r}" if trial and self.study else ""
        sha = f", checkpoint sha256 {self.checkpoint.sha256[:16]}" if self.checkpoint and self.checkpoint.sha256 else ""
        gaps = f", {len(self.missing)} missing" if self.missing else ""
        return f"<Lineage {run}{origin}{sha}{gaps}>"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": LINEAGE_VERSION}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = asdict(section) if section is not None else None
        out["missing"] = list(self.missing)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        kwargs: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            raw = data.get(name)
            if raw is not None:
                known = {f.name for f in fields(section_cls)}
                kwargs[name] = section_cls(**{k: v for k, v in raw.items() if k in known})
        return cls(**kwargs, missing=tuple(data.get("missing") or ()))

    def write(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``<run_dir>/lineage.json`` atomically; returns its path."""
        path = Path(run_dir) / contract.LINEAGE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Lineage:
        """Read a ``lineage.json`` (or the one in a run directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / contract.LINEAGE_FILE
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def rows(self) -> list[Row]:
        """``(what, value, mlflow run id or None)`` rows, as the table views show them."""
        return lineage_rows(self)

    def __str__(self) -> str:
        return render_lineage_text(self)

    def _repr_html_(self) -> str:  # only ever called by a notebook front end
        from nbexec.tracking.store import known_server_url  # lazy: reading a record need not load the store

        return render_lineage_html(self, tracking_url=known_server_url())


def checkpoint_lineage(path: str | os.PathLike[str]) -> CheckpointLineage:
    """Size and hashes of a checkpoint (a directory or one file), from its bytes.

    ``files`` maps each relative path to its sha256; ``sha256`` is the sha256 of
    the lines ``<relative path>\\0<file sha256>\\n`` in sorted order.
    """
    root = Path(path).absolute()
    items = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files: dict[str, str] = {}
    total = 0
    for item in items:
        rel = item.name if item == root else item.relative_to(root).as_posix()
        files[rel] = file_sha256(item)
        total += item.stat().st_size
    return CheckpointLineage(path=str(root), bytes=total, sha256=combined_sha256(files), files=files)


def combined_sha256(files: dict[str, str]) -> str:
    """The checkpoint's sha256 from its files' (see :func:`checkpoint_lineage`)."""
    return listing_sha256((rel, files[rel]) for rel in sorted(files))  # sorted as strings
