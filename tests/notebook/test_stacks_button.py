"""The Stacks button (the %train cell and the panel) as widget models: click, show, stall, end."""

from __future__ import annotations

from pathlib import Path

from nbexec.notebook.stacks_button import StacksButton
from nbexec.stacks.parse import Frame, ThreadStack
from nbexec.stacks.snapshot import RankStacks, StackSnapshot


def _snap(where: str) -> StackSnapshot:
    frames = (Frame("/home/u/train.py", 17, where),)
    return StackSnapshot(Path("/runs/r"), 0.0, (RankStacks(0, 1, (ThreadStack("0x1", frames, main=True),)),))


class FakeRun:
    def __init__(self) -> None:
        self.calls = 0
        self.stall = None

    def stacks(self) -> StackSnapshot:
        self.calls += 1
        return _snap("clicked_here")


class FakeStall:
    message = "rank 0 has not progressed for 5 min 00 s"
    stacks = _snap("stalled_here")


def test_the_button_follows_the_run_and_shows_the_ranks_it_took():
    button = StacksButton()
    assert button.button.disabled  # nothing to take stacks of yet
    run = FakeRun()
    button.on_start(run)
    assert not button.button.disabled

    button.take(block=True)

    assert run.calls == 1 and button.last is not None
    assert "clicked_here" in button.output.value and "nbexec-stacks" in button.output.value

    run.stall = FakeStall()
    button.on_events([{"kind": "stall", "message": FakeStall.message}])
    assert "stalled_here" in button.output.value and "stall: rank 0 has not progressed" in button.output.value

    button.on_end(None)
    assert button.button.disabled and button.button.layout.display == "none"
    assert "stalled_here" in button.output.value  # what was shown stays


def test_an_error_shows_where_the_stacks_would_be():
    class Over(FakeRun):
        def stacks(self) -> StackSnapshot:
            raise RuntimeError("training run 'r' is over (FINISHED)")

    button = StacksButton()
    button.on_start(Over())
    button.take(block=True)
    assert "is over (FINISHED)" in button.output.value
