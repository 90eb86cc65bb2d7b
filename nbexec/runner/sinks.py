"""Sinks: where a running job's lines and events are shown (terminal, notebook view).

Sinks run on the :class:`Dispatcher`'s thread, never on the pump's: a sink that
is slow (or stuck) makes the dispatcher drop display lines, and says how many,
while the log files still get every line.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

from nbexec.events import Event
from nbexec.render.formats import metrics_line
from nbexec.runner.lines import LogLine

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult

QUEUE_BATCHES = 2048  # bounded: at most this many pending batches of lines/events
QUEUE_LINES = 20_000  # and at most this many pending lines, whatever the batch sizes
PARTIAL_EVERY_S = 2.0  # off a terminal, an unfinished line (a progress bar) is printed this often


class Sink:
    """Base class: override what you need. Called from the dispatcher thread.

    A sink that only wants events sets ``wants_lines = False``: lines are then
    not even decoded for it.
    """

    wants_lines = True

    def on_start(self, run: object) -> None:
        """The job's processes are up (``run`` is the TrainingRun handle)."""

    def on_lines(self, lines: Sequence[LogLine]) -> None:
        """New whole lines, in arrival order."""

    def on_partial(self, lines: Sequence[LogLine]) -> None:
        """The unfinished line of some streams (``partial=True``; e.g. a ``\\r`` progress bar).

        Each replaces the previous partial of its ``(rank, stream)``; the
        finished line comes later through :meth:`on_lines`.
        """

    def on_events(self, events: Sequence[Event]) -> None:
        """New progress/metric/checkpoint events from the trainer."""

    def on_dropped(self, count: int) -> None:
        """``count`` lines were not shown because this sink fell behind."""

    def on_end(self, result: TrainingResult) -> None:
        """The job is over; ``result`` is final."""


class Dispatcher:
    """Feeds sinks from a bounded queue on its own thread."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        self.wants_lines = any(getattr(s, "wants_lines", True) for s in self.sinks)
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._dropped = 0
        self._queued_lines = 0
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="nbexec-sinks", daemon=True)
        if self.sinks:
            self._thread.start()

    def put_lines(self, lines: list[LogLine]) -> None:
        if not self.sinks:
            return
        with self._count_lock:
            if self._queued_lines + len(lines) > QUEUE_LINES:
                self._dropped += len(lines)
                return
            self._queued_lines += len(lines)
        self._offer(("lines", lines), len(lines))

    def put_partial(self, lines: list[LogLine]) -> None:
        """Unfinished lines: shown if the sinks keep up, skipped (not counted) if not; the next replaces them."""
        if not self.sinks:
            return
        try:
            self._queue.put_nowait(("partial", lines))
        except queue.Full:
            pass

    def put_events(self, events: list[Event]) -> None:
        if self.sinks:
            self._offer(("events", events), 0)

    def start(self, run: object) -> None:
        if self.sinks:
            self._queue.put(("start", run))

    def end(self, result: TrainingResult, timeout: float = 30.0) -> None:
        """Deliver the final result and wait (bounded) until sinks have seen everything."""
        if not self.sinks:
            return
        self._queue.put(("end", result))
        self._thread.join(timeout)

    def _offer(self, item: tuple[str, object], n_lines: int) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._count_lock:
                self._dropped += n_lines
                self._queued_lines -= n_lines

    def _loop(self) -> None:
        while True:
            kind, payload = self._queue.get()
            with self._count_lock:
                dropped, self._dropped = self._dropped, 0
                if kind == "lines":
                    self._queued_lines -= len(payload)  # type: ignore[arg-type]
            for sink in self.sinks:
                try:
                    if dropped:
                        sink.on_dropped(dropped)
                    if kind == "lines":
                        if getattr(sink, "wants_lines", True):
                            sink.on_lines(payload)  # type: ignore[arg-type]
                    elif kind == "partial":
                        if getattr(sink, "wants_lines", True):
                            sink.on_partial(payload)  # type: ignore[arg-type]
                    elif kind == "events":
                        sink.on_events(payload)  # type: ignore[arg-type]
                    elif kind == "start":
                        sink.on_start(payload)
                    elif kind == "end":
                        sink.on_end(payload)  # type: ignore[arg-type]
                except Exception as err:  # noqa: BLE001 - a broken sink must not stop the others
                    print(f"nbexec: display sink {type(sink).__name__} failed: {err!r}", file=sys.stderr)
            if kind == "end":
                return


def prints_its_own_metrics(config: TrainingConfig) -> bool:
    """Whether the job's script prints a line per logged step itself (the built-in trainer does).

    Then nbexec's ``[nbexec] step N ...`` line would say the same thing twice,
    so a terminal leaves it out unless asked (``nbexec train --metric-lines``).
    A script of the user's own may log metrics without printing them: its
    metric lines show by default.
    """
    from nbexec.config import BUILTIN_TRAINER_MODULE

    return config.launch.target_module == BUILTIN_TRAINER_MODULE  # None for a script (--entrypoint)


class TerminalSink(Sink):
    """Prints ``[rank0] line`` for every line, and (``metric_lines``) a short line per metrics event.

    Unfinished lines (a ``\\r`` progress bar) show live. On a terminal they
    are drawn in place on one status line below the output, as the script
    would draw them itself (the lowest rank's, when several draw at once).
    Elsewhere (a file, a CI log) the latest picture of each is printed as a
    line of its own, at most every ``partial_every_s`` seconds per stream,
    and also when it stays unchanged (a bar waiting on a slow step).

    Args:
        stream: where to print (stdout by default).
        ranks: only these ranks' lines (None: all); launcher lines always show.
        live: draw unfinished lines in place (default: when ``stream`` is a terminal).
        partial_every_s: off a terminal, how often an unfinished line is printed.
        metric_lines: print ``[nbexec] step N name=value ...`` for each metrics
            event (off when the script prints its own: :func:`prints_its_own_metrics`).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        ranks: Iterable[int] | None = None,
        *,
        live: bool | None = None,
        partial_every_s: float = PARTIAL_EVERY_S,
        metric_lines: bool = True,
    ) -> None:
        self.stream = stream or sys.stdout
        self.ranks = set(ranks) if ranks is not None else None
        self.metric_lines = metric_lines
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self.partial_every_s = partial_every_s
        self._partials: dict[tuple[int | None, str], LogLine] = {}  # shown (live) or waiting to be printed
        self._printed_at: dict[tuple[int | None, str], float] = {}  # off a terminal: last print, monotonic
        self._status = ""  # what the status line shows now (live mode)
        self._lock = threading.Lock()  # the dispatcher thread and the timer both print
        self._timer: threading.Timer | None = None

    def _shown(self, line: LogLine) -> bool:
        return self.ranks is None or line.rank is None or line.rank in self.ranks

    def on_lines(self, lines: Sequence[LogLine]) -> None:
        shown = [ln for ln in lines if self._shown(ln)]
        if not shown:
            return
        with self._lock:
            for ln in shown:
                self._partials.pop((ln.rank, ln.stream), None)
            self._write("\n".join(ln.format() for ln in shown) + "\n")

    def on_partial(self, lines: Sequence[LogLine]) -> None:
        shown = [ln for ln in lines if self._shown(ln)]
        if not shown:
            return
        with self._lock:
            for ln in shown:
                self._partials[(ln.rank, ln.stream)] = ln
            if self.live:
                self._write("")
            else:
                self._print_due_partials()

    def on_events(self, events: Sequence[Event]) -> None:
        if not self.metric_lines:
            return
        out = []
        for ev in events:
            if ev.get("kind") == "metrics" and isinstance(ev.get("metrics"), dict):
                values = metrics_line({k: v for k, v in ev["metrics"].items() if isinstance(v, (int, float))})
                step = f" step {ev['step']}" if ev.get("step") is not None else ""
                out.append(f"[nbexec]{step} {values}\n")
        if out:
            with self._lock:
                self._write("".join(out))

    def on_dropped(self, count: int) -> None:
        with self._lock:
            self._write(f"[nbexec] {count} lines not shown (output too fast); all are in the log files\n")

    def on_end(self, result: TrainingResult) -> None:
        with self._lock:
            self._partials.clear()
            if self._timer is not None:
                self._timer.cancel()
            self._write("")

    def _print_due_partials(self) -> None:
        """Off a terminal: print each waiting unfinished line whose interval is over; wake up for the rest."""
        now = time.monotonic()
        wait = None
        for key, ln in list(self._partials.items()):
            due = self._printed_at.get(key, float("-inf")) + self.partial_every_s
            if now >= due:
                self._printed_at[key] = now
                del self._partials[key]
                self.stream.write(ln.format() + "\n")
            else:
                wait = due - now if wait is None else min(wait, due - now)
        self.stream.flush()
        if wait is not None and (self._timer is None or not self._timer.is_alive()):
            self._timer = threading.Timer(wait, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None  # this one is done: _print_due_partials may start the next
            if self._partials:
                self._print_due_partials()

    def _write(self, text: str) -> None:
        """Write finished text above the status line, then redraw the status line (live mode)."""
        if not self.live:
            if text:
                self.stream.write(text)
                self.stream.flush()
            return
        status = ""
        if self._partials:
            lowest = min(self._partials, key=lambda key: (key[0] is None, key[0] or 0, key[1]))
            status = _fit(self._partials[lowest].format())
        clear = "\r\x1b[K" if self._status else ""
        self.stream.write(clear + text + status)
        self.stream.flush()
        self._status = status


class StartedLine(Sink):
    """Prints ``nbexec: starting <run>: N x backend, logs in ...`` once the job's processes are up.

    Not before: a launch stopped by an error (nothing started) must not have
    said it was starting.
    """

    wants_lines = False

    def __init__(self, plan: LaunchPlan, stream: TextIO | None = None) -> None:
        self.plan = plan
        self.stream = stream or sys.stdout

    def on_start(self, run: object) -> None:
        plan = self.plan
        print(f"nbexec: starting {plan.run_name}: {plan.nproc} x {plan.backend}, logs in {plan.log_dir}",
              file=self.stream, flush=True)


def _fit(text: str) -> str:
    """Cut a status line to the terminal's width: a wrapped line could not be redrawn in place."""
    import shutil

    width = shutil.get_terminal_size((100, 24)).columns
    return text if len(text) < width else text[: max(1, width - 2)] + "…"
