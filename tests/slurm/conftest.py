"""A real one-node Slurm cluster for the session (skipped where Slurm is not installed)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import LocalSlurmCluster, missing_requirements, start_cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurmCluster]:
    """munged + slurmctld + slurmd on this machine; ``SLURM_CONF`` points at it meanwhile."""
    why = missing_requirements()
    if why is not None:
        pytest.skip(why)
    # not under pytest's tmp dir: that is private to root, and munged runs as munge
    root = Path(tempfile.mkdtemp(prefix="nbexec-slurm-"))
    cluster = start_cluster(root)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
