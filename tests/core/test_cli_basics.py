"""The first things a newcomer types: ``nbexec --version`` and ``nbexec train --help``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from nbexec.version import __version__


def _nbexec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbexec", *args], capture_output=True, text=True, timeout=120)


def test_version_says_nbexec_python_and_torch() -> None:
    proc = _nbexec("--version")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"nbexec {__version__} (python ")
    assert f"torch {version('torch')}" in proc.stdout
    assert "import torch" not in proc.stderr


def test_train_help_has_examples_for_every_common_flag() -> None:
    proc = _nbexec("train", "--help")

    assert proc.returncode == 0, proc.stderr
    examples = proc.stdout.split("examples:", 1)[1]
    for flag in ("--nproc", "--set", "--dry-run", "--entrypoint", "-m", "--no-tracking", "--experiment",
                 "--backup", "--resume", " -- "):
        assert flag in examples, f"train --help has no example with {flag}"
    assert "--metric-lines" in proc.stdout
