"""The other faces of run_hpo: ``nbexec hpo`` (a real process) and ``%hpo`` in a terminal IPython."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import LR_SPACE, load_study, script_config

pytestmark = pytest.mark.slow


def write_inputs(project: Path) -> tuple[Path, Path]:
    config = script_config(epochs=2)
    config["tracking"] = {"enabled": False}
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    (project / "space.yaml").write_text(yaml.safe_dump(LR_SPACE))
    return project / "config.yaml", project / "space.yaml"


def test_nbexec_hpo_runs_a_sweep_and_exits_2_on_a_bad_space(project: Path) -> None:
    config, space = write_inputs(project)
    cmd = [sys.executable, "-m", "nbexec", "hpo", str(config), "--space", str(space), "--trials", "2",
           "--study", "cli/study.db", "--seed", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nbexec: trial 0 COMPLETE val_loss=" in proc.stdout and "nbexec: trial 1 COMPLETE" in proc.stdout
    assert "[rank0] epoch 2 val_loss" in proc.stdout  # the trials' own lines
    assert "best: trial " in proc.stdout
    assert len(load_study(project / "cli" / "study.db").trials) == 2

    (project / "bad.yaml").write_text(json.dumps({"training.learning_rate": {"type": "float", "low": 1}}))
    bad = subprocess.run([*cmd[:6], str(project / "bad.yaml"), *cmd[7:]], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    assert "search_space.training.learning_rate.high" in bad.stderr and "use a finite number" in bad.stderr


def test_hpo_magic_in_a_terminal_ipython_prints_trials_and_returns_the_result(project: Path) -> None:
    config, space = write_inputs(project)
    code = (
        "%load_ext nbexec\n"
        f"r = %hpo {config} --space {space} --trials 2 --study magic.db --quiet\n"
        "print('RESULT', len(r.trials), r.best is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", code],
                          cwd=project, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert "nbexec: trial 0 COMPLETE" in out and "nbexec: trial 1 COMPLETE" in out, out
    assert "RESULT 2 True" in out
    assert "[rank0]" not in out  # --quiet
