"""How stacks read: ranks side by side (text and HTML), one after the other when too narrow; the stall line."""

from __future__ import annotations

from pathlib import Path

from nbexec.render.live import LiveSnapshot, render_html, render_text
from nbexec.render.stacks import stacks_html, stacks_text
from nbexec.result import RunStatus
from nbexec.stacks.parse import Frame, ThreadStack
from nbexec.stacks.snapshot import RankStacks, StackSnapshot

TORCH = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"
BOOT = str(Path(__file__).resolve().parents[2] / "nbexec" / "child" / "bootstrap.py")


def _snapshot() -> StackSnapshot:
    waiting = ThreadStack("0x1", (Frame(TORCH, 3252, "all_reduce"), Frame("/home/u/train.py", 19, "<module>"),
                                  Frame(BOOT, 120, "_run_target"), Frame("<frozen runpy>", 198, "_run_module_as_main")),
                          main=True)
    sleeping = ThreadStack("0x2", (Frame("/home/u/train.py", 17, "<module>"),), main=True)
    flusher = ThreadStack("0x3", (Frame(BOOT, 282, "flush_until_exit"),))
    return StackSnapshot(Path("/runs/job-1"), 0.0, (
        RankStacks(0, 101, (flusher, waiting)),
        RankStacks(1, 102, (sleeping,)),
        RankStacks(2, None, error="rank 2 (pid 103) is not running"),
    ), path=Path("/runs/job-1/logs/stacks-19700101-000000.txt"))


def test_ranks_stand_side_by_side_under_one_line_each():
    text = stacks_text(_snapshot(), width=180)
    lines = text.splitlines()

    assert lines[0].startswith("nbexec: stacks of job-1 at ") and lines[0].endswith("stacks-19700101-000000.txt")
    assert lines[1:4] == [
        "  rank 0: in all_reduce, called from /home/u/train.py:19",
        "  rank 1: at /home/u/train.py:17 in <module>",
        "  rank 2: no stacks: rank 2 (pid 103) is not running",
    ]
    header = lines[5]
    assert header.index("rank 1 (pid 102)") > header.index("rank 0 (pid 101): waiting in all_reduce")
    assert "│" in header and "rank 2" in header
    assert any("all_reduce  torch/distributed/distributed_c10d.py:3252" in ln and "<module>  /home/u/train.py:17" in ln
               for ln in lines)
    assert "_run_target" not in text and "flush_until_exit" not in text  # nbexec's own frames and thread


def test_too_narrow_for_columns_the_ranks_come_one_after_the_other():
    text = stacks_text(_snapshot(), width=80)

    assert "│" not in text
    assert text.index("rank 0 (pid 101)") < text.index("rank 1 (pid 102)") < text.index("rank 2\n")


def test_html_puts_each_rank_in_a_column_and_escapes_the_code():
    html = stacks_html(_snapshot())

    assert html.count("flex:1 1 0") == 3 and "display:flex" in html
    assert "&lt;module&gt;" in html and "<module>" not in html


def test_the_live_view_says_a_stall_while_it_lasts():
    snap = LiveSnapshot(run_name="r", status=RunStatus.RUNNING, elapsed_s=3.0, nproc=2, backend="gloo",
                        command="torchrun", run_dir="/runs/r", stall="rank 1 has not progressed for 5 min 00 s")

    assert "  stall:    rank 1 has not progressed for 5 min 00 s" in render_text(snap).splitlines()
    assert "stall: rank 1 has not progressed" in render_html(snap)
    assert "stall" not in render_text(LiveSnapshot(run_name="r", status=RunStatus.RUNNING, elapsed_s=3.0, nproc=2,
                                                   backend="gloo", command="torchrun", run_dir="/runs/r"))
