"""The synthetic dataset's default path is keyed by its settings, and a data error is a config error (rc 2).

Issue 16: after the README's main command, ``nbexec train notebooks/tiny.yaml`` in the same
directory failed (rc 1, rank tracebacks) because both used one default data path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def nbexec_train(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBEXEC_")}
    return subprocess.run([sys.executable, "-m", "nbexec", "train", "--no-tracking", *args], cwd=cwd,
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


def test_two_example_configs_with_other_data_sizes_both_run_in_one_directory(tmp_path: Path) -> None:
    tiny = yaml.safe_load((REPO / "notebooks" / "tiny.yaml").read_text())
    smaller = {**tiny, "data": {**tiny["data"], "num_train": tiny["data"]["num_train"] // 2}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (tmp_path / "smaller.yaml").write_text(yaml.safe_dump(smaller))
    for name in ("tiny.yaml", "smaller.yaml", "tiny.yaml"):
        proc = nbexec_train(tmp_path, name, "--quiet")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "FINISHED" in proc.stdout
    made = sorted(p.name for p in (tmp_path / "outputs" / "data").iterdir())
    assert made == ["synthetic-ner-train160-val64-len16-seed0-v1", "synthetic-ner-train320-val64-len16-seed0-v1"]


def test_a_data_error_in_the_ranks_is_a_config_error_said_once(tmp_path: Path) -> None:
    tiny = yaml.safe_load((REPO / "notebooks" / "tiny.yaml").read_text())
    first = {**tiny, "data": {**tiny["data"], "path": "mydata"}, "training": {**tiny["training"], "max_steps": 2}}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(first))
    assert nbexec_train(tmp_path, "first.yaml", "--quiet").returncode == 0
    # The same explicit path, other settings: the dataset there is not the one asked for.
    clash = {**first, "data": {**first["data"], "num_train": 100}}
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump(clash))
    proc = nbexec_train(tmp_path, "clash.yaml")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "Connection closed" not in output
    said = [line for line in proc.stdout.splitlines() if "config error" in line]
    assert len(said) == 1 and said[0].startswith("[rank0!]"), output
    assert "num_train=320 (asked 100)" in said[0] and "leave data.path unset" in said[0]
    assert "root cause:" in proc.stderr and "ConfigError" in proc.stderr
