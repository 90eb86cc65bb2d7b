"""Tests for nbexec.hardware: GPU probing without CUDA, CUDA_VISIBLE_DEVICES, platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from runner.conftest import alive, wait_until

from nbexec.hardware import GPUInfo, HardwareInfo, detect_hardware, detect_platform

UUID0 = "GPU-11111111-aaaa-bbbb-cccc-000000000000"
UUID1 = "GPU-22222222-aaaa-bbbb-cccc-111111111111"
TWO_GPUS = f"0, NVIDIA H100 80GB HBM3, 81559, {UUID0}\n1, NVIDIA A100-SXM4-40GB, 40960, {UUID1}\n"


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``import pynvml`` fail, so only nvidia-smi can answer."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


@pytest.fixture
def fake_smi(tmp_path: Path, no_nvml: None) -> Callable[[str], dict[str, str]]:
    """Returns a function that writes a fake nvidia-smi script body and an env with it on PATH."""

    def make(body: str) -> dict[str, str]:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        exe = bin_dir / "nvidia-smi"
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(0o755)
        return {"PATH": str(bin_dir)}

    return make


def smi_printing(text: str) -> str:
    return f"cat <<'EOF'\n{text}EOF"


def test_nvidia_smi_lists_two_gpus(fake_smi: Callable[[str], dict[str, str]]) -> None:
    info = detect_hardware(fake_smi(smi_printing(TWO_GPUS)))

    assert info.gpu_source == "nvidia-smi"
    assert info.gpu_error is None
    assert info.cuda_visible_devices is None
    assert info.gpus == (
        GPUInfo(0, "NVIDIA H100 80GB HBM3", 81559, UUID0, 0),
        GPUInfo(1, "NVIDIA A100-SXM4-40GB", 40960, UUID1, 1),
    )
    assert info.gpu_count == 2 and info.has_gpu


def test_nvidia_smi_is_called_with_query_argv(fake_smi: Callable[[str], dict[str, str]], tmp_path: Path) -> None:
    args_file = tmp_path / "args"
    env = fake_smi(f'printf "%s\\n" "$@" > {args_file}\n' + smi_printing(TWO_GPUS))

    detect_hardware(env)

    assert args_file.read_text().splitlines() == [
        "--query-gpu=index,name,memory.total,uuid",
        "--format=csv,noheader,nounits",
    ]


@pytest.mark.parametrize(
    ("visible", "expected_physical"),
    [
        ("1", [1]),
        ("1,0", [1, 0]),
        ("0,1", [0, 1]),
        (UUID1, [1]),
        ("GPU-2222", [1]),  # unique prefix
        (f"{UUID1},0", [1, 0]),  # UUIDs and ordinals mixed
        ("", []),
        ("-1", []),
        ("0,-1,1", [0]),  # -1 ends the list
        ("1,7,0", [1]),  # no GPU 7: CUDA stops there
        ("0,GPU-ffff,1", [0]),  # unknown UUID stops too
        ("GPU-,1", []),  # prefix matching both GPUs is ambiguous
        ("0,0", []),  # a repeated GPU hides all
        ("1abc", [1]),  # read like strtoul
    ],
)
def test_cuda_visible_devices_selects_and_renumbers(
    fake_smi: Callable[[str], dict[str, str]], visible: str, expected_physical: list[int]
) -> None:
    env = {**fake_smi(smi_printing(TWO_GPUS)), "CUDA_VISIBLE_DEVICES": visible}

    info = detect_hardware(env)

    assert [gpu.physical_index for gpu in info.gpus] == expected_physical
    assert [gpu.index for gpu in info.gpus] == list(range(len(expected_physical)))
    assert info.cuda_visible_devices == visible
    assert info.gpu_error is None


def test_visible_single_gpu_keeps_its_details(fake_smi: Callable[[str], dict[str, str]]) -> None:
    env = {**fake_smi(smi_printing(TWO_GPUS)), "CUDA_VISIBLE_DEVICES": "1"}

    assert detect_hardware(env).gpus == (GPUInfo(0, "NVIDIA A100-SXM4-40GB", 40960, UUID1, 1),)


@pytest.mark.parametrize(
    ("body", "error_part"),
    [
        ("echo 'NVIDIA-SMI has failed because it could not talk to the driver'\nexit 9", "exited with 9"),
        ("echo 'this is not csv'", "unexpected nvidia-smi line"),
        ("echo '0, Tesla T4, [N/A], GPU-1234'", "unexpected nvidia-smi line"),
    ],
)
def test_failing_nvidia_smi_reports_no_gpus(
    fake_smi: Callable[[str], dict[str, str]], body: str, error_part: str
) -> None:
    info = detect_hardware(fake_smi(body))

    assert info.gpus == ()
    assert info.gpu_source == "none"
    assert info.gpu_error is not None and error_part in info.gpu_error


def test_hanging_nvidia_smi_times_out(fake_smi: Callable[[str], dict[str, str]]) -> None:
    # "sleep" runs as a child of the shell: the kill must reach it too, or the pipe
    # stays open and the probe waits for it (an hour: pytest's timeout fails the test).
    # What is checked is that no child is left, not how long anything took.
    seconds = f"3600.{os.getpid()}{time.monotonic_ns() % 10**6}"  # a command line no other process has
    env = fake_smi(f"sleep {seconds} &\nwait")

    info = detect_hardware(env, timeout_s=0.5)

    assert info.gpus == () and info.gpu_source == "none"
    assert info.gpu_error is not None and "within 0.5 s" in info.gpu_error
    wait_until(lambda: not alive([p for p in psutil.process_iter() if _cmdline(p)[-1:] == [seconds]]), 120,
               "the hung probe's child to be killed")


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def test_no_nvml_and_no_nvidia_smi(tmp_path: Path, no_nvml: None) -> None:
    info = detect_hardware({"PATH": str(tmp_path)})

    assert info.gpu_source == "none"
    assert info.gpus == ()
    assert info.gpu_error is not None and "nvidia-smi: not on PATH" in info.gpu_error
    assert "no GPU" in info.summary()


def test_this_machine_probe_does_not_raise() -> None:
    info = detect_hardware()

    assert info.gpu_source in {"nvml", "nvidia-smi", "none"}
    assert (info.gpu_source == "none") == (info.gpu_error is not None)


def fake_pynvml(*, init_error: Exception | None = None) -> types.ModuleType:
    """A pynvml stand-in with one GPU; records whether shutdown was called."""
    module = types.ModuleType("pynvml")
    module.shutdown_calls = 0  # type: ignore[attr-defined]

    def init() -> None:
        if init_error is not None:
            raise init_error

    def shutdown() -> None:
        module.shutdown_calls += 1  # type: ignore[attr-defined]

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: b"NVIDIA L4"  # type: ignore[attr-defined]  # old pynvml: bytes
    module.nvmlDeviceGetUUID = lambda h: UUID0  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=23034 * 2**20)  # type: ignore[attr-defined]
    return module


def test_nvml_is_tried_first(monkeypatch: pytest.MonkeyPatch, fake_smi: Callable[[str], dict[str, str]]) -> None:
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    info = detect_hardware(fake_smi(smi_printing(TWO_GPUS)))

    assert info.gpu_source == "nvml"
    assert info.gpus == (GPUInfo(0, "NVIDIA L4", 23034, UUID0, 0),)
    assert nvml.shutdown_calls == 1  # type: ignore[attr-defined]


def test_nvml_failure_falls_back_to_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, fake_smi: Callable[[str], dict[str, str]]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=RuntimeError("driver not loaded")))

    info = detect_hardware(fake_smi(smi_printing(TWO_GPUS)))

    assert info.gpu_source == "nvidia-smi"
    assert info.gpu_count == 2
    assert info.gpu_error is None


@pytest.mark.parametrize(
    ("env", "paths", "expected"),
    [
        ({}, [], "local"),
        ({"COLAB_RELEASE_TAG": "release-colab_20250101"}, [], "colab"),
        ({}, ["var/colab/hostname"], "colab"),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, [], "kaggle"),
        ({"KAGGLE_URL_BASE": "https://www.kaggle.com"}, [], "kaggle"),
        ({}, ["kaggle/input/"], "kaggle"),
        # Kaggle images set COLAB_RELEASE_TAG as well; Kaggle wins.
        ({"COLAB_RELEASE_TAG": "x", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}, [], "kaggle"),
        ({"COLAB_RELEASE_TAG": "x"}, ["kaggle/input/"], "kaggle"),
    ],
)
def test_detect_platform(tmp_path: Path, env: dict[str, str], paths: list[str], expected: str) -> None:
    for rel in paths:
        target = tmp_path / rel
        if rel.endswith("/"):
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True)
            target.touch()

    assert detect_platform(env, root=tmp_path) == expected


def test_detect_hardware_reports_platform_and_cpus(tmp_path: Path, no_nvml: None) -> None:
    info = detect_hardware({"PATH": str(tmp_path), "KAGGLE_URL_BASE": "https://www.kaggle.com"})

    assert info.platform == "kaggle"
    assert info.cpu_count >= 1


def test_summary_and_to_dict(fake_smi: Callable[[str], dict[str, str]]) -> None:
    info = detect_hardware(fake_smi(smi_printing(TWO_GPUS)))

    summary = info.summary()
    assert "NVIDIA H100 80GB HBM3, 81559 MiB" in summary
    assert "NVIDIA A100-SXM4-40GB, 40960 MiB" in summary
    assert "2 GPUs" in summary and "platform " in summary
    data = json.loads(json.dumps(info.to_dict()))
    assert data["gpu_count"] == 2
    assert data["gpus"][1] == {
        "index": 1, "name": "NVIDIA A100-SXM4-40GB", "memory_mb": 40960, "uuid": UUID1, "physical_index": 1,
    }


def test_summary_line_format() -> None:
    info = HardwareInfo(
        gpus=(GPUInfo(0, "NVIDIA H100 80GB HBM3", 81559, UUID0, 0),),
        cpu_count=2, platform="local", gpu_source="nvml", gpu_error=None, cuda_visible_devices=None,
    )

    assert info.summary() == "2 CPUs, 1 GPU (NVIDIA H100 80GB HBM3, 81559 MiB), platform local"


def test_import_and_detect_leave_torch_unloaded() -> None:
    code = (
        "import sys, nbexec.hardware\n"
        "nbexec.hardware.detect_hardware()\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'IPython') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
