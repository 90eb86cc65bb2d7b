"""Resource use of the ranks: psutil for real on a busy process; NVML through its seam (a stand-in pynvml)."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

from nbexec.render import formats
from nbexec.runner.resources import GpuUse, NvmlProbe, ResourceSampler, open_gpu_probe

BUSY = "import time\nx = [0] * 10_000_000\nend = time.time() + 60\nwhile time.time() < end: pass\n"


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    """A process that holds ~80 MB and keeps a core busy (as a rank does)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_psutil_measures_each_rank_for_real(busy: subprocess.Popen[bytes]) -> None:
    sampler = ResourceSampler(lambda: {0: busy.pid}, lambda ev: None, gpu=None)
    assert sampler.sample() is not None  # the first sample of a process has no CPU figure yet
    first = sampler.sample()
    assert first is not None and first["ranks"]["0"]["pid"] == busy.pid

    sample: dict[str, Any] | None = None
    for _ in range(400):  # until it has made its list and had CPU time since the last sample (a loaded machine)
        threading.Event().wait(0.05)
        sample = sampler.sample()
        rank = sample["ranks"]["0"] if sample else {}
        if (rank.get("cpu_percent") or 0) > 0 and rank.get("rss_bytes", 0) > 50e6:
            break
    assert sample is not None
    rank = sample["ranks"]["0"]
    assert rank["cpu_percent"] > 0
    assert rank["rss_bytes"] > 50e6, "the list of ten million items"
    assert "gpu" not in rank
    assert 0 <= sample["host"]["cpu_percent"] <= 100 * 64
    assert 0 < sample["host"]["memory_used_bytes"] < sample["host"]["memory_total_bytes"]
    assert sample["kind"] == "resources" and sample["sample"] >= 2


def test_a_rank_that_exited_is_left_out_and_no_rank_means_no_sample() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sampler = ResourceSampler(lambda: {0: gone.pid}, lambda ev: None, gpu=None)
    sample = sampler.sample()
    assert sample is not None and sample["ranks"] == {}
    assert ResourceSampler(dict, lambda ev: None, gpu=None).sample() is None


def test_the_thread_emits_samples_until_stopped(busy: subprocess.Popen[bytes]) -> None:
    got: list[dict[str, Any]] = []
    two = threading.Event()

    def emit(ev: dict[str, Any]) -> None:
        got.append(ev)
        if len(got) >= 2:
            two.set()

    sampler = ResourceSampler(lambda: {0: busy.pid}, emit, interval=0.05, gpu=None).start()
    assert two.wait(60), "two samples"
    sampler.stop()
    count = len(got)
    assert [ev["sample"] for ev in got] == list(range(1, count + 1))
    threading.Event().wait(0.2)
    assert len(got) == count, "nothing after stop()"


class FakeGpus:
    """A GpuProbe: what NVML would say for the ranks' pids."""

    def sample(self, pids: dict[int, int]) -> dict[int, GpuUse]:
        return {rank: GpuUse(device=rank, util_percent=90.0 + rank, memory_bytes=3.2e9) for rank in pids}

    def close(self) -> None:
        pass


def test_gpu_use_joins_each_ranks_row(busy: subprocess.Popen[bytes]) -> None:
    sampler = ResourceSampler(lambda: {0: busy.pid}, lambda ev: None, gpu=FakeGpus())
    sampler.sample()
    sample = sampler.sample()
    assert sample is not None
    rank = sample["ranks"]["0"]
    assert (rank["gpu"], rank["gpu_util_percent"], rank["gpu_memory_bytes"]) == (0, 90.0, 3.2e9)
    rows = formats.resource_rows(sample)
    assert rows[0][0] == "rank 0" and rows[0][3:] == ("cuda:0 90%", "3.2 GB")
    assert rows[-1][0] == "host" and len(rows[-1]) == 5


def fake_pynvml(processes: dict[int, list[tuple[int, int | None]]], util: dict[int, int]) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's ``pynvml``: devices, their utilisation, their compute processes."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    nvml.NVMLError = NVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(processes)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=util[h])  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in processes[h]
    ]
    return nvml


def test_nvml_probe_maps_processes_to_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml({0: [(111, 2_000_000_000), (999, 5)], 1: [(222, None)]}, util={0: 75, 1: 12})
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = open_gpu_probe()
    assert isinstance(probe, NvmlProbe)
    assert probe.sample({0: 111, 1: 222, 2: 333}) == {
        0: GpuUse(0, 75.0, 2e9),
        1: GpuUse(1, 12.0, None),  # the driver does not say (MIG, WSL)
    }


def test_no_nvml_or_no_gpu_means_no_gpu_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml({}, {}))
    assert open_gpu_probe() is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert open_gpu_probe() is None
