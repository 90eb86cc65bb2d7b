"""``%train`` in a terminal IPython (no kernel, no display outputs): lines and the summary as text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_SCRIPTS

pytestmark = pytest.mark.slow


def test_terminal_ipython_prints_lines_summary_and_a_short_failure(tmp_path: Path) -> None:
    code = (
        "%load_ext nbexec\n"
        f"r = %train --entrypoint {FIXTURE_SCRIPTS / 'ok.py'} --nproc 2 --no-tracking --output {tmp_path} --rank 1\n"
        "print('RESULT', r.status)\n"
        f"%train --entrypoint {FIXTURE_SCRIPTS / 'fail_rank1.py'} --nproc 2 --no-tracking --output {tmp_path}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", code],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert "[rank1] rank 1/2 step 0" in out and "[rank1!] rank 1 warning on stderr" in out
    assert "[rank0] rank 0/2 step 0" not in out, "--rank 1 shows rank 1 only"
    assert re.search(r"nbexec: \d{8}-\d{6}-ok-\w+ FINISHED in ", out) and "RESULT FINISHED" in out
    assert "rank 1 failed (exit code 1): ValueError: rank one exploded on batch 17" in out
    assert "[launcher" not in out, "no torchelastic report"
