"""Shared test fixtures: machines simulated by hand, so plans do not depend on the host."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nbexec.hardware import GPUInfo, HardwareInfo


def _machine(cpus: int = 2, gpus: int = 0, cuda_visible_devices: str | None = None) -> HardwareInfo:
    """A HardwareInfo with ``cpus`` cores and ``gpus`` identical 80 GB GPUs."""
    devices = tuple(
        GPUInfo(i, "NVIDIA H100 80GB HBM3", 81559, f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd", i)
        for i in range(gpus)
    )
    return HardwareInfo(
        gpus=devices,
        cpu_count=cpus,
        platform="local",
        gpu_source="nvml" if gpus else "none",
        gpu_error=None if gpus else "nvml: simulated machine without GPUs",
        cuda_visible_devices=cuda_visible_devices,
    )


@pytest.fixture
def machine() -> Callable[..., HardwareInfo]:
    """Factory: ``machine(cpus=2, gpus=0)`` returns a simulated HardwareInfo."""
    return _machine


@pytest.fixture(scope="session", autouse=True)
def session_tracking_store(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Jobs launched by tests track into one real SQLite store in a temp dir, not ./mlflow.db."""
    import os

    if "MLFLOW_TRACKING_URI" in os.environ:
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
