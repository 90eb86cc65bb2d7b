"""A full disk under the run dir is said plainly, and the outcome stays honest (finding 7).

The run dir is on a small tmpfs mounted for the test (root only; elsewhere the
tests skip, saying so). Before: the pump's thread died on ENOSPC, the CLI said
"torchrun exited with code 1; see the launcher log" with an empty log, and
result.json was left as a 0-byte .tmp.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parent / "scripts"
FLOOD = Path(__file__).resolve().parents[1] / "fixtures" / "scripts" / "flood.py"


@pytest.fixture
def small_disk(tmp_path):  # noqa: ANN201
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root to test a full disk")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): a full disk cannot be made")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def train(output: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbexec.cli", "train", "--nproc", "2", "--no-tracking",
                           "--output", str(output), *args], capture_output=True, text=True, timeout=600)


def test_logs_that_fill_the_disk_do_not_stop_the_job_and_are_said(small_disk):
    done = train(small_disk, "--entrypoint", str(FLOOD), "--", "20000")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # the job itself finished: FINISHED is the honest status
    assert "FINISHED" in out
    assert "No space left on device" in out and "rank0.log" in out
    assert "Exception in thread" not in out and "Traceback" not in out
    run_dir = next(small_disk.iterdir())
    assert not (run_dir / "result.json.tmp").exists(), "a half-written result.json was left"


def test_a_job_that_fails_on_a_full_disk_says_no_space_left(small_disk):
    done = train(small_disk, "--entrypoint", str(SCRIPTS / "fill_disk.py"))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "No space left on device" in out
    root_cause = [ln for ln in out.splitlines() if "root cause:" in ln]
    assert root_cause and ("no space left" in root_cause[0].lower()), out
    assert str(small_disk) in out
    assert "Exception in thread" not in out
    assert not list(small_disk.rglob("result.json.tmp"))
