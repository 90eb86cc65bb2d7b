"""A slow sink never slows the producer: it drops display lines, says how many, and sees the end."""

from __future__ import annotations

import io
import threading

from nbexec.runner.lines import LogLine
from nbexec.runner.sinks import QUEUE_BATCHES, Dispatcher, Sink, TerminalSink

from .conftest import wait_until


class BlockedSink(Sink):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[LogLine] = []
        self.dropped = 0
        self.ended = None

    def on_lines(self, lines):
        self.release.wait()
        self.lines.extend(lines)

    def on_dropped(self, count):
        self.dropped += count

    def on_end(self, result):
        self.ended = result


def test_stuck_sink_drops_lines_without_blocking_and_still_gets_the_end():
    sink = BlockedSink()
    dispatcher = Dispatcher([sink])
    total = QUEUE_BATCHES * 3
    for i in range(total):  # would block forever if put() waited for the sink
        dispatcher.put_lines([LogLine(0, "stdout", str(i), 0.0)])
    sink.release.set()
    dispatcher.end("RESULT")

    assert sink.ended == "RESULT"
    assert sink.dropped > 0
    assert len(sink.lines) + sink.dropped == total
    shown = [int(ln.text) for ln in sink.lines]
    assert shown == sorted(shown)  # what is shown stays in order


def test_broken_sink_does_not_stop_the_others():
    class Broken(Sink):
        def on_lines(self, lines):
            raise RuntimeError("display died")

    out = io.StringIO()
    dispatcher = Dispatcher([Broken(), TerminalSink(stream=out)])
    dispatcher.put_lines([LogLine(1, "stdout", "still shown", 0.0)])
    dispatcher.end("RESULT")
    assert out.getvalue() == "[rank1] still shown\n"


def test_terminal_sink_filters_ranks_and_prints_metrics():
    out = io.StringIO()
    sink = TerminalSink(stream=out, ranks=[1])
    sink.on_lines([LogLine(0, "stdout", "hidden", 0.0), LogLine(1, "stderr", "shown", 0.0),
                   LogLine(None, "stdout", "launcher", 0.0)])
    sink.on_events([{"kind": "metrics", "step": 5, "metrics": {"loss": 0.25}}])
    assert out.getvalue() == "[rank1!] shown\n[launcher] launcher\n[nbexec] step 5 loss=0.25\n"


def test_pending_lines_are_bounded_by_count_not_only_by_batches():
    from nbexec.runner.sinks import QUEUE_LINES

    sink = BlockedSink()
    dispatcher = Dispatcher([sink])
    big = [LogLine(0, "stdout", "x", 0.0)] * 1000
    for _ in range(QUEUE_LINES // 1000 * 3):  # 3x the bound, in few large batches
        dispatcher.put_lines(list(big))
    sink.release.set()
    dispatcher.end("RESULT")
    assert len(sink.lines) <= QUEUE_LINES + 1000
    assert len(sink.lines) + sink.dropped == QUEUE_LINES // 1000 * 3 * 1000


def bar(rank: int, text: str, partial: bool = True) -> LogLine:
    return LogLine(rank, "stderr", text, 0.0, partial=partial)


def test_on_a_terminal_an_unfinished_line_is_redrawn_in_place_below_the_output():
    out = io.StringIO()
    sink = TerminalSink(stream=out, live=True)
    sink.on_partial([bar(0, "train:  10%|#")])
    sink.on_partial([bar(0, "train:  20%|##")])
    sink.on_lines([LogLine(1, "stdout", "a line from rank 1", 0.0)])  # printed above the status line
    sink.on_lines([bar(0, "train: 100%|##########", partial=False)])  # the finished bar replaces it
    assert out.getvalue() == (
        "[rank0!] train:  10%|#"
        "\r\x1b[K[rank0!] train:  20%|##"
        "\r\x1b[K[rank1] a line from rank 1\n[rank0!] train:  20%|##"
        "\r\x1b[K[rank0!] train: 100%|##########\n"
    )


class FrozenClock:
    """``time`` for the sink, with a ``monotonic()`` that moves only when the test says so: a
    stalled test thread on a loaded machine must not make two calls fall in different intervals."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_off_a_terminal_an_unfinished_line_is_printed_now_and_then_and_when_it_stays(monkeypatch):
    from nbexec.runner import sinks

    clock = FrozenClock()
    monkeypatch.setattr(sinks, "time", clock)
    out = io.StringIO()
    sink = TerminalSink(stream=out, live=False, partial_every_s=0.2)
    sink.on_partial([bar(0, "train:  10%")])  # the first one at once
    sink.on_partial([bar(0, "train:  20%")])  # within the interval: waits
    assert out.getvalue() == "[rank0!] train:  10%\n"
    # nothing else comes (a slow step): the waiting picture is still printed once its interval is over
    clock.now += 0.2
    wait_until(lambda: "20%" in out.getvalue(), 120, "the waiting bar to be printed")
    assert out.getvalue() == "[rank0!] train:  10%\n[rank0!] train:  20%\n"
    sink.on_partial([bar(0, "train:  30%")])
    sink.on_lines([bar(0, "train: 100%", partial=False)])  # finished before its turn: 30% is never printed
    sink.on_end(None)
    assert out.getvalue().splitlines()[-1] == "[rank0!] train: 100%"
    assert "30%" not in out.getvalue()


def test_metric_lines_can_be_left_to_the_script() -> None:
    """The built-in trainer prints its own line per step: nbexec's would repeat it (issue: loss printed twice)."""
    from nbexec.config import load_config
    from nbexec.runner.sinks import prints_its_own_metrics

    out = io.StringIO()
    sink = TerminalSink(out, live=False, metric_lines=False)
    sink.on_events([{"kind": "metrics", "step": 5, "metrics": {"loss": 0.25}}])
    sink.on_lines([LogLine(0, "stdout", "epoch 1/1 step 5/10 loss 0.2500", 0.0)])
    assert out.getvalue() == "[rank0] epoch 1/1 step 5/10 loss 0.2500\n"

    assert prints_its_own_metrics(load_config(None))
    assert not prints_its_own_metrics(load_config({"launch": {"entrypoint": "train.py"}}))
    assert not prints_its_own_metrics(load_config({"launch": {"module": "my_pkg.train"}}))
