"""The outcome of a training job: status, exit code, root cause, metrics, checkpoint, timings."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.errors import RootCause
from nbexec.render.formats import metrics_line


class RunStatus(str, enum.Enum):
    """Lifecycle of a job; the terminal names match MLflow's run statuses."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    def is_terminal(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TrainingResult:
    """What a finished job left behind; also written to ``result.json``.

    Attributes:
        metrics: the last reported value of each metric.
        checkpoint: the checkpoint directory, when the trainer wrote one.
        root_cause: why it failed (None unless ``status`` is FAILED).
        log_paths: ``{"rank0": path, ..., "launcher": path}``.
        backup: the backup made after the run (``BackupRecord.to_dict()``),
            ``{"error": ..., "location": ...}`` when it failed, None when off.
        last_step, total_steps: the last step the trainer reported (where a KILLED or FAILED
            run stopped), and of how many; None when it reported none.
        data_path: the data the trainer says it used (its ``data`` event), None if it did not say.
        tracking: how the MLflow run went: ``{"state": "tracked", "run_id", "experiment_id",
            "uri"}``, ``{"state": "untracked", "reason"}`` when the job ran without its run
            (it could not be opened or ended), ``{"state": "off"}``; None when not known
            here (e.g. a node other than node 0).
    """

    run_name: str
    run_dir: Path
    status: RunStatus
    exit_code: int | None
    started_at: float
    ended_at: float
    nproc: int
    backend: str
    config_hash: str
    command: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    root_cause: RootCause | None = None
    log_paths: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    backup: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    last_step: int | None = None
    total_steps: int | None = None
    data_path: str | None = None

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.FINISHED

    @property
    def untracked_reason(self) -> str | None:
        """Why a job that should have been tracked has no MLflow run, or None."""
        if self.tracking and self.tracking.get("state") == "untracked":
            return str(self.tracking.get("reason") or "its MLflow run could not be opened")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "run_dir": str(self.run_dir),
            "status": self.status.value,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "nproc": self.nproc,
            "backend": self.backend,
            "config_hash": self.config_hash,
            "command": list(self.command),
            "metrics": self.metrics,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "root_cause": self.root_cause.to_dict() if self.root_cause else None,
            "log_paths": {k: str(v) for k, v in self.log_paths.items()},
            "mlflow_run_id": self.mlflow_run_id,
            "backup": self.backup,
            "tracking": self.tracking,
            "last_step": self.last_step,
            "total_steps": self.total_steps,
            "data_path": self.data_path,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingResult:
        rc = data.get("root_cause")
        return cls(
            run_name=data["run_name"],
            run_dir=Path(data["run_dir"]),
            status=RunStatus(data["status"]),
            exit_code=data.get("exit_code"),
            started_at=data["started_at"],
            ended_at=data["ended_at"],
            nproc=data["nproc"],
            backend=data["backend"],
            config_hash=data["config_hash"],
            command=tuple(data.get("command", ())),
            metrics=dict(data.get("metrics") or {}),
            checkpoint=Path(data["checkpoint"]) if data.get("checkpoint") else None,
            root_cause=RootCause(**{k: rc[k] for k in RootCause.__dataclass_fields__ if k in rc}) if rc else None,
            log_paths={k: Path(v) for k, v in (data.get("log_paths") or {}).items()},
            mlflow_run_id=data.get("mlflow_run_id"),
            backup=data.get("backup"),
            tracking=data.get("tracking"),
            last_step=data.get("last_step"),
            total_steps=data.get("total_steps"),
            data_path=data.get("data_path"),
        )

    def write(self) -> Path:
        """Write ``result.json`` atomically (a reader never sees half a file)."""
        path = self.run_dir / contract.RESULT_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # no empty or half file left (a full disk)
            raise
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainingResult:
        """Read a run's ``result.json``."""
        path = Path(run_dir) / contract.RESULT_FILE
        return cls.from_dict(json.loads(path.read_text()))

    def __repr__(self) -> str:
        metrics = metrics_line(self.metrics)
        return (
            f"TrainingResult({self.run_name!r}, {self.status.value}, "
            f"{self.duration_s:.1f}s, {self.nproc}x{self.backend}"
            + (f", {metrics}" if metrics else "")
            + ")"
        )
