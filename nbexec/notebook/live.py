"""The live run view in a notebook cell: a runner sink that keeps one display up to date.

The view is one display output (``display(..., display_id=True)``) created in
the launching cell; later renderings replace it in place (``update_display_data``),
from whatever thread, so a job started with ``--background`` keeps drawing in
its own cell while other cells run (printing from a thread would land in
whichever cell runs next).

Threads: the runner's dispatcher calls the ``on_*`` methods, which only record
(a bounded tail, a dirty flag); a refresher thread renders and publishes, at
most ``max_rate`` times a second, and once a second for the clock. The final
rendering (the summary) is published from ``on_end``, before the run's
``wait()`` returns, so a caller that waited sees the summary in place.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbexec.contract import rank_log_path
from nbexec.notebook.tail import DEFAULT_TAIL, LineTail
from nbexec.notebook.throttle import Throttle
from nbexec.render.live import LiveSnapshot, render_html, render_text
from nbexec.render.summary import RunSummary
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.events import Event
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun
    from nbexec.runner.lines import LogLine

MAX_RATE = 5.0  # display updates per second, at most: a line waits <= 200 ms for its redraw
CLOCK_TICK_S = 1.0  # re-render this often for the elapsed time, even when nothing else changed

# Receives one MIME bundle (``{"text/html": ..., "text/plain": ...}``) per rendering.
Publisher = Callable[[Mapping[str, str]], None]


class DisplayPublisher:
    """Publishes bundles into one IPython display output: the first call displays, later ones update."""

    def __init__(self) -> None:
        self._handle: Any = None

    @property
    def display_id(self) -> str | None:
        return self._handle.display_id if self._handle is not None else None

    def __call__(self, bundle: Mapping[str, str]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(dict(bundle), raw=True, display_id=True)
        else:
            self._handle.update(dict(bundle), raw=True)


class LiveRunView(Sink):
    """Shows a launched job in the cell that launched it.

    Args:
        plan: the job's launch plan (name, command, run dir).
        ranks: ranks whose lines show (None: all, and the launcher's).
        tail: how many lines the view keeps.
        quiet: show no lines (progress, metrics and the summary only).
        show_traceback: put the failing rank's traceback in the summary (off
            when the cell's error output shows it already).
        git: where the code was, for the lineage table (:func:`nbexec.tracking.tags.git_tags`).
        publish: where renderings go (default: an IPython display output).
        max_rate: display updates per second, at most.
        clock: wall clock, for elapsed time (injectable for tests).
        on_follow_failure: called with the new selection when the view switches
            by itself to the rank that failed (the panel keeps its picker in step).
    """

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        ranks: Collection[int] | None = (0,),
        tail: int = DEFAULT_TAIL,
        quiet: bool = False,
        show_traceback: bool = True,
        git: Mapping[str, str] | None = None,
        publish: Publisher | None = None,
        max_rate: float = MAX_RATE,
        clock: Callable[[], float] = time.time,
        on_follow_failure: Callable[[tuple[int, ...]], None] | None = None,
    ) -> None:
        from nbexec.redact import redact_argv

        self.plan = plan
        self.quiet = quiet
        self.show_traceback = show_traceback
        self.git = git
        self.publish = publish or DisplayPublisher()
        self.tail = LineTail(ranks, maxlen=tail)
        self.updates = 0  # renderings published so far
        self._command = shlex.join(redact_argv(plan.argv))
        self._clock = clock
        self._created = clock()
        self._throttle = Throttle(1.0 / max_rate if max_rate > 0 else 0.0)
        self._run: TrainingRun | None = None
        self._summary: RunSummary | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._on_follow_failure = on_follow_failure
        self._followed_failure = False

    # --- driven by the magic (main thread) -----------------------------------------

    def show(self) -> None:
        """Display the view (in the current cell) before the job starts."""
        self._publish()

    def attach(self, run: TrainingRun) -> None:
        """The job is launched: follow it (also done by ``on_start``)."""
        with self._lock:
            self._run = run
            start = self._refresher is None and not self._stop.is_set()
            if start:
                self._refresher = threading.Thread(
                    target=self._refresh_loop, name=f"nbexec-view-{self.plan.run_name}", daemon=True
                )
        if start:
            assert self._refresher is not None
            self._refresher.start()

    def fail_to_start(self, error: BaseException) -> None:
        """The job could not start (nothing ran): show why, in place of the view."""
        self._error = f"not started: {error or type(error).__name__}"
        self._stop.set()
        self._publish()

    def select_ranks(self, ranks: Collection[int] | None) -> None:
        """Show these ranks' lines from now on (None: all); redrawn at once."""
        self.tail.select(ranks)
        self._dirty.set()
        if self._stop.is_set() and self._summary is not None:
            self._publish()  # the run is over: re-render the summary's "last lines"

    # --- Sink: called on the runner's dispatcher thread ----------------------------------

    def on_start(self, run: object) -> None:
        self.attach(run)  # type: ignore[arg-type]

    def on_lines(self, lines: Sequence[LogLine]) -> None:
        if not self.quiet and self.tail.add(lines):
            self._dirty.set()

    def on_partial(self, lines: Sequence[LogLine]) -> None:
        if not self.quiet and self.tail.set_partial(lines):
            self._dirty.set()

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.get("kind") == "failure" and isinstance(ev.get("rank"), int):
                self._follow_failure(ev["rank"])
        self._dirty.set()

    def _follow_failure(self, rank: int) -> None:
        """Show the first rank that failed, as soon as it does (later failures are its peers reacting)."""
        if self._followed_failure:
            return
        self._followed_failure = True
        ranks = self.tail.ranks
        if ranks is None or rank in ranks:
            return
        self.tail.select((rank,))
        if self._on_follow_failure is not None:
            try:
                self._on_follow_failure((rank,))
            except Exception:  # noqa: BLE001 - a display hook must not break the view
                pass

    def on_dropped(self, count: int) -> None:
        self.tail.note_dropped(count)
        self._dirty.set()

    def on_end(self, result: TrainingResult) -> None:
        if result.root_cause is not None and result.root_cause.rank is not None:
            self._follow_failure(result.root_cause.rank)  # "last lines" are the failed rank's
        self._stop.set()
        self._dirty.set()
        refresher = self._refresher
        if refresher is not None and refresher is not threading.current_thread():
            refresher.join()
        run = self._run
        self._summary = RunSummary.from_result(
            result,
            tracking=getattr(run, "tracking", None),
            data=_data_path(self.plan),
            git=self.git,
            show_traceback=self.show_traceback,
        )
        self._publish()

    # --- rendering -------------------------------------------------------------------

    def snapshot(self) -> LiveSnapshot:
        """What the view shows now."""
        run = self._run
        lines, hidden, dropped = self.tail.snapshot()
        if run is not None:
            status = run.status
            started = run.started_at or self._created
            progress, metrics = run.progress, run.metrics
        else:
            status, started, progress, metrics = RunStatus.PENDING, self._created, None, {}
        ranks = self.tail.ranks
        log_paths = tuple((f"rank{r}", str(rank_log_path(self.plan.run_dir, r))) for r in sorted(ranks or ()))
        return LiveSnapshot(
            run_name=self.plan.run_name,
            status=status,
            elapsed_s=self._clock() - started,
            nproc=self.plan.nproc,
            backend=self.plan.backend,
            command=self._command,
            run_dir=str(self.plan.run_dir),
            log_dir=str(self.plan.log_dir),
            lines=lines,
            ranks_label=self.tail.label,
            hidden=hidden,
            dropped=dropped,
            quiet=self.quiet,
            progress=progress,
            metrics=metrics,
            log_paths=log_paths,
            summary=self._summary,
            error=self._error,
            stall=getattr(getattr(run, "stall", None), "message", None),
        )

    def _publish(self) -> None:
        snap = self.snapshot()
        self.publish({"text/html": render_html(snap), "text/plain": render_text(snap)})
        self._throttle.mark()
        self.updates += 1

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(CLOCK_TICK_S)  # new output, or the clock's tick
            if self._stop.is_set():
                return
            delay = self._throttle.delay()
            if delay > 0 and self._stop.wait(delay):  # rate limit; on_end publishes the last state
                return
            self._dirty.clear()
            try:
                self._publish()
            except Exception:  # noqa: BLE001 - a display hiccup must not end the view
                pass


def _data_path(plan: LaunchPlan) -> str | None:
    path = plan.config.data.get("path") if isinstance(plan.config.data, Mapping) else None
    return str(path) if path else None
