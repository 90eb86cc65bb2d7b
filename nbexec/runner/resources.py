"""What each rank of a local job uses while it runs: CPU, memory, and GPU where there are GPUs.

The parent knows every rank's pid (each rank's bootstrap sends it when it
connects its output, see :mod:`nbexec.runner.streams`), so it can measure the
ranks from outside, at no cost to training: a :class:`ResourceSampler` thread
reads them every few seconds and hands a ``resources`` event to the run, which
passes it to the views and to MLflow (as system metrics, see
:mod:`nbexec.tracking.sink`):

    {"kind": "resources", "time": ..., "sample": 3, "source": "parent",
     "ranks": {"0": {"pid": 1234, "cpu_percent": 98.5, "rss_bytes": 4.1e8,
                     "gpu": 0, "gpu_util_percent": 87.0, "gpu_memory_bytes": 3.2e9}, ...},
     "host": {"cpu_percent": 97.0, "memory_used_bytes": ..., "memory_total_bytes": ...}}

CPU and memory come from psutil (a rank's CPU includes its child processes,
e.g. data loader workers; its memory is its own resident set). GPU use comes
from NVML (``nvidia-ml-py``, the ``gpu`` extra) through :class:`GpuProbe`, a
small seam: utilisation is the rank's device's, memory is what NVML says the
rank's process holds on it. Nothing here initialises CUDA.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nbexec.events import Event

SAMPLE_EVERY_S = 2.0  # often enough to see a stall, rare enough to cost nothing


@dataclass(frozen=True)
class GpuUse:
    """One process's GPU: the device index, the device's utilisation (%), the process's memory on it (bytes)."""

    device: int
    util_percent: float | None
    memory_bytes: float | None


class GpuProbe(Protocol):
    """Where GPU use comes from (NVML on a GPU machine; a stand-in in tests)."""

    def sample(self, pids: Mapping[int, int]) -> dict[int, GpuUse]:
        """``{rank: GpuUse}`` for the ranks (``{rank: pid}``) that have a GPU; others are left out."""

    def close(self) -> None: ...


class NvmlProbe:
    """GPU use from NVML (``pynvml``, from ``nvidia-ml-py``): no CUDA context, no driver calls from the ranks.

    Raises:
        ImportError, OSError, RuntimeError: NVML is not there (no driver, no GPU); use :func:`open_gpu_probe`.
    """

    def __init__(self) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def sample(self, pids: Mapping[int, int]) -> dict[int, GpuUse]:
        nvml = self._nvml
        rank_of = {pid: rank for rank, pid in pids.items()}
        out: dict[int, GpuUse] = {}
        for index, handle in enumerate(self._handles):
            try:
                util: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:
                util = None
            try:
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except nvml.NVMLError:
                continue
            for proc in procs:
                rank = rank_of.get(proc.pid)
                if rank is None:
                    continue
                used = getattr(proc, "usedGpuMemory", None)  # None where the driver does not say (MIG, WSL)
                out[rank] = GpuUse(index, util, float(used) if used is not None else None)
        return out

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a library that may be half gone
            pass


def open_gpu_probe() -> GpuProbe | None:
    """NVML when it is installed and sees a GPU, else None (CPU and memory are still measured)."""
    try:
        probe = NvmlProbe()
    except Exception:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded...
        return None
    if not probe._handles:
        probe.close()
        return None
    return probe


class ResourceSampler:
    """Samples the ranks' CPU, memory and GPU every ``interval`` seconds on its own thread.

    Args:
        pids: returns ``{rank: pid}`` of the ranks known so far (they connect one by one).
        emit: receives each ``resources`` event.
        interval: seconds between samples.
        gpu: where GPU use comes from (default: NVML if it sees a GPU; pass None for CPU only,
            or a :class:`GpuProbe` of your own).
    """

    def __init__(
        self,
        pids: Callable[[], Mapping[int, int]],
        emit: Callable[[Event], None],
        *,
        interval: float = SAMPLE_EVERY_S,
        gpu: GpuProbe | None | str = "auto",
    ) -> None:
        self._pids = pids
        self._emit = emit
        self.interval = interval
        self._auto_gpu = gpu == "auto"  # opened on the sampling thread: NVML's init is not free
        self._gpu: GpuProbe | None = None if isinstance(gpu, str) else gpu
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process (kept: cpu_percent measures since the last call)
        self._children: dict[int, Any] = {}
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbexec-resources", daemon=True)

    def start(self) -> ResourceSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (idempotent); returns once the thread is gone."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _loop(self) -> None:
        if self._auto_gpu:
            self._gpu = open_gpu_probe()
        try:
            self.sample()  # primes cpu_percent: the first value of each process is measured from here
            while not self._stop.wait(self.interval):
                event = self.sample()
                if event is not None:
                    try:
                        self._emit(event)
                    except Exception:  # noqa: BLE001 - a sink's trouble must not end the sampling
                        pass
        finally:
            if self._gpu is not None and self._auto_gpu:
                self._gpu.close()

    def sample(self) -> Event | None:
        """One sample now (None before any rank is known); ``cpu_percent`` covers the time since the last."""
        import psutil

        pids = dict(self._pids())
        if not pids:
            return None
        ranks: dict[str, dict[str, Any]] = {}
        for rank, pid in sorted(pids.items()):
            usage = self._process_usage(psutil, pid)
            if usage is not None:
                ranks[str(rank)] = usage
        if self._gpu is not None:
            try:
                gpu = self._gpu.sample(pids)
            except Exception:  # noqa: BLE001 - a driver hiccup: this sample goes without GPU figures
                gpu = {}
            for rank, use in gpu.items():
                entry = ranks.get(str(rank))
                if entry is not None:
                    entry.update(gpu=use.device, gpu_util_percent=use.util_percent, gpu_memory_bytes=use.memory_bytes)
        memory = psutil.virtual_memory()
        event: Event = {
            "kind": "resources", "time": time.time(), "sample": self._count, "source": "parent", "ranks": ranks,
            "host": {"cpu_percent": psutil.cpu_percent(None), "memory_used_bytes": float(memory.total - memory.available),
                     "memory_total_bytes": float(memory.total)},
        }
        self._count += 1
        return event

    def _process_usage(self, psutil: Any, pid: int) -> dict[str, Any] | None:
        proc = self._procs.get(pid)
        try:
            new = proc is None
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                cpu: float | None = proc.cpu_percent(None)
                rss = float(proc.memory_info().rss)
            if new:
                cpu = None  # its first reading covers no time: known from the next sample on
            for child in proc.children(recursive=True):  # data loader workers: their CPU is the rank's work
                known = self._children.get(child.pid)
                if known is None:
                    self._children[child.pid] = child
                    child.cpu_percent(None)  # its first reading covers nothing
                    continue
                try:
                    if cpu is not None:
                        cpu += known.cpu_percent(None)
                except psutil.Error:
                    self._children.pop(child.pid, None)
        except psutil.Error:  # the rank has exited (or was never ours to read)
            self._procs.pop(pid, None)
            return None
        return {"pid": pid, "cpu_percent": cpu, "rss_bytes": rss}


__all__ = ["GpuProbe", "GpuUse", "NvmlProbe", "ResourceSampler", "SAMPLE_EVERY_S", "open_gpu_probe"]
