"""What this machine offers for training: GPUs, CPUs and the hosting platform.

GPUs are listed through NVML (``pynvml``) or ``nvidia-smi``, never through torch:
``torch.cuda`` would create a CUDA context in the notebook kernel, and a forked
or later-launched training process could then fail or lose GPU memory to it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SMI_QUERY = ("--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits")
_LEADING_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class GPUInfo:
    """One GPU as the training process will see it.

    ``index`` is the CUDA ordinal (position in ``CUDA_VISIBLE_DEVICES``);
    ``physical_index`` is the NVML / nvidia-smi index, None when not known.
    """

    index: int
    name: str
    memory_mb: int
    uuid: str
    physical_index: int | None = None


@dataclass(frozen=True)
class HardwareInfo:
    """GPUs, CPUs and platform found by :func:`detect_hardware`."""

    gpus: tuple[GPUInfo, ...]
    cpu_count: int
    platform: str  # "colab" | "kaggle" | "local"
    gpu_source: str  # "nvml" | "nvidia-smi" | "none"
    gpu_error: str | None  # why GPU probing failed, if it did
    cuda_visible_devices: str | None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict (GPUs as a list of dicts)."""
        return {
            "gpus": [vars(gpu).copy() for gpu in self.gpus],
            "gpu_count": self.gpu_count,
            "cpu_count": self.cpu_count,
            "platform": self.platform,
            "gpu_source": self.gpu_source,
            "gpu_error": self.gpu_error,
            "cuda_visible_devices": self.cuda_visible_devices,
        }

    def summary(self) -> str:
        """Returns one human line, e.g. ``2 CPUs, 1 GPU (NVIDIA H100, 81559 MiB), platform local``."""
        cpus = f"{self.cpu_count} CPU{'s' if self.cpu_count != 1 else ''}"
        if self.gpus:
            details = "; ".join(f"{g.name}, {g.memory_mb} MiB" for g in self.gpus)
            gpus = f"{self.gpu_count} GPU{'s' if self.gpu_count != 1 else ''} ({details})"
        else:
            gpus = f"no GPU ({self.gpu_error})" if self.gpu_error else "no GPU"
        line = f"{cpus}, {gpus}, platform {self.platform}"
        if self.cuda_visible_devices is not None:
            line += f", CUDA_VISIBLE_DEVICES={self.cuda_visible_devices!r}"
        return line


def detect_hardware(env: Mapping[str, str] | None = None, *, timeout_s: float = 10.0) -> HardwareInfo:
    """Probes GPUs (NVML, then nvidia-smi), CPUs and the platform; never raises.

    Args:
        env: Environment to read ``CUDA_VISIBLE_DEVICES``, ``PATH`` and platform
            markers from; defaults to ``os.environ``.
        timeout_s: Longest wait for ``nvidia-smi`` (a wedged driver can hang it).

    Returns:
        The findings; when no probe worked, no GPUs and ``gpu_error`` says why.
    """
    env = os.environ if env is None else env
    errors: list[str] = []
    physical: list[GPUInfo] | None = None
    source = "none"
    for name, probe in (("nvml", _probe_nvml), ("nvidia-smi", lambda: _probe_nvidia_smi(env, timeout_s))):
        try:
            physical = probe()
        except ImportError:  # nvidia-ml-py is optional: say how to get it, not a bare ModuleNotFoundError
            errors.append(f"{name}: not installed (pip install 'nbexec[gpu]' adds nvidia-ml-py)")
            continue
        except Exception as err:  # noqa: BLE001 - any probe failure means "try the next one"
            errors.append(f"{name}: {err}")
            continue
        source = name
        break
    visible_spec = env.get("CUDA_VISIBLE_DEVICES")
    gpus = _select_visible(physical or [], visible_spec)
    return HardwareInfo(
        gpus=tuple(gpus),
        cpu_count=_cpu_count(),
        platform=detect_platform(env),
        gpu_source=source,
        gpu_error=None if physical is not None else "; ".join(errors),
        cuda_visible_devices=visible_spec,
    )


def detect_platform(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> str:
    """Tells Colab, Kaggle and anything else apart, from files and env vars only.

    Args:
        env: Environment to inspect; defaults to ``os.environ``.
        root: Filesystem root to look for marker paths under (tests use a temp dir).

    Returns:
        ``"colab"``, ``"kaggle"`` or ``"local"``.
    """
    env = os.environ if env is None else env
    # Kaggle images also set COLAB_RELEASE_TAG, so Kaggle is checked first.
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env or (root / "kaggle" / "input").exists():
        return "kaggle"
    if "COLAB_RELEASE_TAG" in env or (root / "var" / "colab" / "hostname").exists():
        return "colab"
    return "local"


def _probe_nvml() -> list[GPUInfo]:
    """Lists physical GPUs via NVML, which reads the driver without a CUDA context."""
    import pynvml  # optional dependency (nvidia-ml-py); ImportError moves on to nvidia-smi

    pynvml.nvmlInit()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name, uuid = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(GPUInfo(i, _text(name), int(memory.total) // 2**20, _text(uuid), i))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _probe_nvidia_smi(env: Mapping[str, str], timeout_s: float) -> list[GPUInfo]:
    """Lists physical GPUs by running nvidia-smi found on ``env``'s PATH."""
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        raise FileNotFoundError("not on PATH")
    code, out, err = _run([exe, *_SMI_QUERY], timeout_s)
    if code != 0:
        reason = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"nvidia-smi exited with {code}: {reason[0][:200]}")
    gpus = []
    for line in filter(None, (raw.strip() for raw in out.splitlines())):
        fields = [field.strip() for field in line.split(",")]
        try:
            # A name could hold a comma; index, memory and uuid cannot.
            index, name, memory, uuid = int(fields[0]), ", ".join(fields[1:-2]), int(fields[-2]), fields[-1]
        except (ValueError, IndexError):
            raise ValueError(f"unexpected nvidia-smi line {line[:200]!r}") from None
        if not name or not uuid:
            raise ValueError(f"unexpected nvidia-smi line {line[:200]!r}")
        gpus.append(GPUInfo(index, name, memory, uuid, index))
    return gpus


def _run(argv: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
    """Runs ``argv`` and returns (exit code, stdout, stderr); kills its whole group on timeout."""
    # A session of its own lets a timeout kill children too; otherwise one
    # holding the pipe open would keep communicate() waiting after the kill.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise TimeoutError(f"nvidia-smi gave no answer within {timeout_s:g} s") from None
    return proc.returncode, out, err


def _select_visible(physical: Sequence[GPUInfo], spec: str | None) -> list[GPUInfo]:
    """Applies ``CUDA_VISIBLE_DEVICES`` as CUDA does and renumbers the survivors from 0.

    Entries are ordinals or ``GPU-`` UUID prefixes matching exactly one GPU. As in
    CUDA, parsing stops at the first invalid entry, and a repeated GPU hides all.
    MIG entries are not resolved here and count as invalid.
    """
    # Ordinals are matched against NVML/nvidia-smi (PCI bus) order. CUDA's own
    # default order puts the fastest GPU first; the two agree on machines with
    # one GPU model or with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    if spec is None:
        return list(physical)
    by_index = {gpu.physical_index: gpu for gpu in physical}
    chosen: list[GPUInfo] = []
    for entry in (part.strip() for part in spec.split(",")):
        if entry.startswith("GPU-"):
            matches = [gpu for gpu in physical if gpu.uuid.startswith(entry)]
            gpu = matches[0] if len(matches) == 1 else None
        else:
            # CUDA reads ordinals like strtoul: "1abc" is 1, "" or "-1" ends the list.
            match = _LEADING_INT.match(entry)
            gpu = by_index.get(int(match.group())) if match else None
        if gpu is None:
            break
        if gpu in chosen:
            return []
        chosen.append(gpu)
    return [GPUInfo(i, g.name, g.memory_mb, g.uuid, g.physical_index) for i, g in enumerate(chosen)]


def _cpu_count() -> int:
    """Returns the CPUs this process may run on (affinity, as in containers), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _text(value: str | bytes) -> str:
    # Older pynvml releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value
