"""Fixtures for the notebook face: a real Jupyter kernel, shared by the tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import Kernel, kernel_env

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_SCRIPTS = ROOT / "tests" / "fixtures" / "scripts"
NOTEBOOK_SCRIPTS = Path(__file__).resolve().parent / "scripts"

# The reference trainer at its smallest: a 2-rank job of it takes ~6-8 s on 2 CPU cores.
TINY_CONFIG = """\
model: {d_model: 32, layers: 1, heads: 2, ff_dim: 64}
training: {learning_rate: 1.0e-2, batch_size: 16, epochs: 1, seed: 3, log_every: 5}
data: {num_train: 320, num_val: 64, seq_len: 16}
launch: {nproc: 2}
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory, session_tracking_store: str) -> Iterator[Kernel]:
    """One kernel per test module with nbexec loaded; MLflow tracks into the session store."""
    cwd = tmp_path_factory.mktemp("kernel")
    k = Kernel(cwd, kernel_env(session_tracking_store))
    try:
        cell = k.run("%load_ext nbexec")
        assert cell.ok, cell.error
        yield k
    finally:
        k.close()


@pytest.fixture
def fresh_kernel(tmp_path: Path, session_tracking_store: str) -> Iterator[Kernel]:
    """A kernel of its own, nothing loaded."""
    k = Kernel(tmp_path, kernel_env(session_tracking_store))
    try:
        yield k
    finally:
        k.close()
