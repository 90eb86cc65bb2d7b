"""A user's own script under ``%train --entrypoint`` in a real kernel: its tqdm bar shows live in
the cell, and nbexec's progress bar is fed from it (the script sends no progress events)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TINY_CONFIG  # noqa: F401
from kernel_driver import Kernel
from live_frames import frames

pytestmark = pytest.mark.slow
OWN_SCRIPTS = ROOT / "tests" / "own_scripts" / "scripts"
FIXTURE_SCRIPTS = ROOT / "tests" / "fixtures" / "scripts"


def text(msg: dict[str, Any]) -> str:
    return msg["content"].get("data", {}).get("text/plain", "")


def test_a_tqdm_bar_shows_in_the_cell_while_the_script_runs(kernel: Kernel, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    seen: list[str] = []

    def see_the_bar(messages: list[dict[str, Any]]) -> None:
        if stop.exists():
            return
        shown = frames(messages)  # what the live view's widget was sent, frame by frame
        if shown and "3/10" in shown[-1].text:
            seen.append(shown[-1].text)
            stop.write_text("seen")  # the script waits at step 3 until the bar is seen

    cell = kernel.run(
        f"%train --entrypoint {OWN_SCRIPTS / 'tqdm_until_file.py'} --nproc 2 --no-tracking "
        f"--output {tmp_path} -- {stop}",
        timeout=300, react=see_the_bar,
    )
    assert cell.ok, cell.error
    assert seen, "the bar never showed in the cell while the script waited at step 3"
    live = seen[0]
    assert "[rank0!] train:  30%|" in live  # the script's own bar, as its unfinished line
    assert "train: step 3/10 (30%)" in live, live  # nbexec's progress bar, fed from it
    final = text(cell.displays()[-1])
    assert "FINISHED" in final


def test_the_view_switches_to_the_rank_that_failed(kernel: Kernel, tmp_path: Path) -> None:
    cell = kernel.run(f"%train --entrypoint {FIXTURE_SCRIPTS / 'fail_rank1.py'} --nproc 2 --no-tracking "
                      f"--output {tmp_path}", timeout=300)
    assert not cell.ok
    final = cell.displays()[-1]["content"]["data"]["text/html"]
    assert "last lines of rank 1" in final  # the view showed rank 0; the summary shows the rank that failed
    assert "rank one exploded on batch 17" in final
    error = "\n".join(cell.error["traceback"])
    assert "at fail_rank1.py:11" in error or "fail_rank1.py:11" in error, error
