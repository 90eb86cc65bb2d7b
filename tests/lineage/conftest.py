"""Lineage fixtures: the sweep fixtures of tests/hpo, and a stand-in for a build without the backup capability."""

from __future__ import annotations

import sys

import pytest
from hpo import conftest as sweep_fixtures

# the sweep tests' fixtures and helpers, shared (pytest finds fixtures by name in this module)
LR_SPACE, load_study = sweep_fixtures.LR_SPACE, sweep_fixtures.load_study
client, project, template_db, tiny = (sweep_fixtures.client, sweep_fixtures.project, sweep_fixtures.template_db,
                                      sweep_fixtures.tiny)


@pytest.fixture
def no_backup_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import nbexec.backup`` fails, as before that capability is merged."""
    monkeypatch.setitem(sys.modules, "nbexec.backup", None)
