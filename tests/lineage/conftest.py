"""Lineage fixtures: the sweep fixtures of tests/hpo, and the backup capability (real, or its contract)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from hpo import conftest as sweep_fixtures

# the sweep tests' fixtures and helpers, shared (pytest finds fixtures by name in this module)
LR_SPACE, load_study = sweep_fixtures.LR_SPACE, sweep_fixtures.load_study
client, project, template_db, tiny = (sweep_fixtures.client, sweep_fixtures.project, sweep_fixtures.template_db,
                                      sweep_fixtures.tiny)


@dataclass(frozen=True)
class ContractBackupRecord:
    """The BackupRecord of the backup contract (briefs/backup_contract.md)."""

    source: str
    location: str
    files_copied: int
    files_skipped: int
    bytes_copied: int
    duration_s: float
    verified: bool
    verified_at: str
    manifest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContractBackupRecord:
        return cls(**d)


def contract_backup(source, *, backup_enabled: bool, backup_to_drive: bool = False, target=None,  # noqa: ANN001
                    project=None, run_name=None) -> ContractBackupRecord | None:  # noqa: ANN001
    """``immediate_backup_if_needed`` as the contract defines it: a verified copy with a manifest."""
    if not backup_enabled:
        return None
    started = time.time()
    src = Path(source)
    dest = Path(target) / (project or "default") / (run_name or src.name)
    shutil.copytree(src, dest, dirs_exist_ok=True)
    files = {p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(dest.rglob("*")) if p.is_file()}
    for rel, sha in files.items():
        assert hashlib.sha256((src / rel).read_bytes()).hexdigest() == sha
    manifest = dest.parent / f"{dest.name}.manifest.json"
    manifest.write_text(json.dumps(files))
    return ContractBackupRecord(
        source=str(src), location=str(dest), files_copied=len(files), files_skipped=0,
        bytes_copied=sum((dest / r).stat().st_size for r in files), duration_s=time.time() - started,
        verified=True, verified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), manifest=str(manifest),
    )


@pytest.fixture
def backup_capability(monkeypatch: pytest.MonkeyPatch) -> str:
    """The real ``nbexec.backup`` when it is installed, else a module implementing its contract."""
    try:
        import nbexec.backup  # noqa: F401

        return "real"
    except ImportError:
        module = types.ModuleType("nbexec.backup")
        module.immediate_backup_if_needed = contract_backup
        module.BackupRecord = ContractBackupRecord
        monkeypatch.setitem(sys.modules, "nbexec.backup", module)
        return "contract"


@pytest.fixture
def no_backup_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import nbexec.backup`` fails, as before that capability is merged."""
    monkeypatch.setitem(sys.modules, "nbexec.backup", None)
