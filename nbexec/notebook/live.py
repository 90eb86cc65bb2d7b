"""The live run view in a notebook cell: a runner sink that keeps one view of the job up to date.

In a notebook the view is a small widget (:class:`~nbexec.notebook.live_widget.LiveViewWidget`)
shown in the launching cell: its head (status, phase, progress, metrics,
resource use) is re-rendered, and its log tail gets only the lines it has not
shown, so the tail follows the newest line like a terminal and a reader who
scrolls up keeps their place. When the run is over, the cell's output is
replaced by the summary as plain HTML (``update_display_data``), which is what a
saved notebook keeps; the panel instead keeps its widget and shows the summary in it.
Given ``publish=``, the view renders whole HTML/text bundles instead (tests,
front ends without widgets).

Threads: the runner's dispatcher calls the ``on_*`` methods, which only record
(a bounded tail, the events' state, dirty flags); a refresher thread publishes:
the tail at most ``TAIL_RATE`` times a second (a printed line reaches the
browser within ~50 ms), the head with the tail whenever the progress or the
phase changed (so they always agree), else at most ``MAX_RATE`` times a second
and once a second for the clock. The final rendering (the summary) is
published from ``on_end``, before the run's ``wait()`` returns.

Progress, phase and metrics come from the events as the dispatcher delivers
them, in order with the lines: the view never shows a line together with a
progress older than the step that line reports.
"""

from __future__ import annotations

import itertools
import shlex
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbexec.contract import rank_log_path
from nbexec.notebook.tail import DEFAULT_TAIL, LineTail
from nbexec.notebook.throttle import Throttle
from nbexec.render import markup
from nbexec.render.live import LiveSnapshot, render_head_html, render_html, render_text, tail_note
from nbexec.render.summary import RunSummary, render_summary_html
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink
from nbexec.runner.state import Phase, PhaseName, RunState

if TYPE_CHECKING:
    from nbexec.events import Event
    from nbexec.notebook.live_widget import LiveViewWidget
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun
    from nbexec.runner.lines import LogLine

MAX_RATE = 5.0  # whole renderings (or head updates) per second, at most
TAIL_RATE = 20.0  # tail updates per second in the widget, at most: a line waits <= 50 ms for the browser
CLOCK_TICK_S = 1.0  # re-render this often for the elapsed time, even when nothing else changed

# Receives one MIME bundle (``{"text/html": ..., "text/plain": ...}``) per rendering.
Publisher = Callable[[Mapping[str, str]], None]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class DisplayPublisher:
    """Publishes bundles into one IPython display output: the first call displays, later ones update."""

    def __init__(self) -> None:
        self._handle: Any = None

    @property
    def display_id(self) -> str | None:
        return self._handle.display_id if self._handle is not None else None

    def __call__(self, bundle: Mapping[str, Any]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(dict(bundle), raw=True, display_id=True)
        else:
            self._handle.update(dict(bundle), raw=True)


_VIEWS = itertools.count()  # views made in this kernel (see LiveRunView._generation_base)
GENERATIONS_PER_VIEW = 1 << 20  # a view's own rank choices: far fewer than this


class LiveRunView(Sink):
    """Shows a launched job in the cell that launched it (or in a panel's widget).

    Args:
        plan: the job's launch plan (name, command, run dir).
        ranks: ranks whose lines show (None: all, and the launcher's).
        tail: how many lines the view keeps.
        quiet: show no lines (progress, metrics and the summary only).
        show_traceback: put the failing rank's traceback in the summary (off
            when the cell's error output shows it already).
        git: where the code was, for the lineage table (:func:`nbexec.tracking.tags.git_tags`).
        publish: render whole bundles into this instead of the widget (tests, text front ends).
        widget: draw into this widget (the panel's), which stays and shows the summary at the
            end; default: a new one, displayed in the current cell and replaced by the summary.
        max_rate: whole renderings (or head updates) per second, at most.
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
        widget: LiveViewWidget | None = None,
        max_rate: float = MAX_RATE,
        clock: Callable[[], float] = time.time,
        on_follow_failure: Callable[[tuple[int, ...]], None] | None = None,
    ) -> None:
        from nbexec.redact import redact_argv

        self.plan = plan
        self.quiet = quiet
        self.show_traceback = show_traceback
        self.git = git
        self.tail = LineTail(ranks, maxlen=tail)
        self.updates = 0  # renderings published so far
        self.publish: Publisher | None = publish
        self.widget: LiveViewWidget | None = None
        self._display: DisplayPublisher | None = None
        if publish is None:
            if widget is None:
                from nbexec.notebook.live_widget import LiveViewWidget

                widget, self._display = LiveViewWidget(), DisplayPublisher()
            self.widget = widget
            self.widget.quiet = quiet
            if widget.over or widget.lines:  # a widget that showed another run (the panel's, reused)
                widget.over = False
        # Each view's lines are numbered from 0: its generations are its own, so a reused widget
        # drops the previous run's lines instead of taking the new ones for lines it has shown.
        self._generation_base = next(_VIEWS) * GENERATIONS_PER_VIEW
        self._command = shlex.join(redact_argv(plan.argv))
        self._clock = clock
        self._created = clock()
        head_interval = 1.0 / max_rate if max_rate > 0 else 0.0
        self._head_throttle = Throttle(head_interval)
        # Without the widget every rendering is whole: one rate for everything.
        self._tail_throttle = Throttle(1.0 / TAIL_RATE if self.widget is not None else head_interval)
        self._next_clock = 0.0
        self._state = RunState(started=self._created)
        self._run: TrainingRun | None = None
        self._summary: RunSummary | None = None
        self._error: str | None = None
        self._lock = threading.Lock()  # the state, the flags
        self._publish_lock = threading.Lock()  # one rendering at a time (refresher, on_end, select_ranks)
        self._tail_dirty = self._head_dirty = self._moved = False  # moved: progress or phase changed
        self._published_phase: PhaseName | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._on_follow_failure = on_follow_failure
        self._followed_failure = False

    # --- driven by the magic (main thread) -----------------------------------------

    def show(self) -> None:
        """Display the view (in the current cell) before the job starts."""
        self._publish(head=True, tail=True)

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
        self._publish_end()

    def select_ranks(self, ranks: Collection[int] | None) -> None:
        """Show these ranks' lines from now on (None: all); redrawn at once."""
        self.tail.select(ranks)
        self._mark(tail=True)
        if self._stop.is_set() and self._summary is not None:
            self._publish_end()  # the run is over: re-render the summary's "last lines"

    # --- Sink: called on the runner's dispatcher thread ----------------------------------

    def on_start(self, run: object) -> None:
        self.attach(run)  # type: ignore[arg-type]

    def on_lines(self, lines: Sequence[LogLine]) -> None:
        if not self.quiet and self.tail.add(lines):
            self._mark(tail=True)

    def on_partial(self, lines: Sequence[LogLine]) -> None:
        if not self.quiet and self.tail.set_partial(lines):
            self._mark(tail=True)

    def on_events(self, events: Sequence[Event]) -> None:
        moved = False
        with self._lock:
            before = (self._state.progress, self._state.phase)
            self._state.apply(events)
            moved = (self._state.progress, self._state.phase) != before
        for ev in events:
            if ev.get("kind") == "failure" and isinstance(ev.get("rank"), int):
                self._follow_failure(ev["rank"])
        self._mark(head=True, moved=moved)

    def _follow_failure(self, rank: int) -> None:
        """Show the first rank that failed, as soon as it does (later failures are its peers reacting)."""
        if self._followed_failure:
            return
        self._followed_failure = True
        ranks = self.tail.ranks
        if ranks is None or rank in ranks:
            return
        self.tail.select((rank,))
        self._mark(tail=True)
        if self._on_follow_failure is not None:
            try:
                self._on_follow_failure((rank,))
            except Exception:  # noqa: BLE001 - a display hook must not break the view
                pass

    def on_dropped(self, count: int) -> None:
        self.tail.note_dropped(count)
        self._mark(tail=True)

    def on_end(self, result: TrainingResult) -> None:
        if result.root_cause is not None and result.root_cause.rank is not None:
            self._follow_failure(result.root_cause.rank)  # "last lines" are the failed rank's
        self._stop.set()
        self._wake.set()
        refresher = self._refresher
        if refresher is not None and refresher is not threading.current_thread():
            refresher.join()
        with self._lock:
            finishing = self._state.phase.name is PhaseName.FINISHING
        if finishing and self._published_phase is not PhaseName.FINISHING and self._run is not None:
            # The job was finishing (checkpoint, MLflow, backup) faster than the last redraw: the
            # phase still shows once, with the lines it came with, before the summary replaces it.
            self._publish(head=True, tail=True)
        run = self._run
        self._summary = RunSummary.from_result(
            result,
            tracking=getattr(run, "tracking", None),
            data=_data_path(self.plan),
            git=self.git,
            show_traceback=self.show_traceback,
        )
        self._publish_end()

    # --- rendering -------------------------------------------------------------------

    def snapshot(self) -> LiveSnapshot:
        """What the view shows now."""
        run = self._run
        lines, hidden, dropped = self.tail.snapshot()
        with self._lock:
            progress, metrics = self._state.progress, dict(self._state.metrics)
            phase: Phase | None = self._state.phase
            resources = self._state.resources
        if run is not None:
            status = run.status
            if status.is_terminal() and self._summary is None:
                status = RunStatus.RUNNING  # its bookkeeping (MLflow, backup) is not over until the summary
            started = run.started_at or self._created
        else:
            status, started, phase = RunStatus.PENDING, self._created, None
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
            phase=phase,
            resources=resources,
            summary=self._summary,
            error=self._error,
            stall=getattr(getattr(run, "stall", None), "message", None),
        )

    def _mark(self, *, head: bool = False, tail: bool = False, moved: bool = False) -> None:
        with self._lock:
            self._head_dirty |= head
            self._tail_dirty |= tail
            self._moved |= moved
        self._wake.set()

    def _publish(self, *, head: bool, tail: bool) -> None:
        with self._publish_lock:
            snap = self.snapshot()
            if self.widget is None:
                assert self.publish is not None
                self.publish({"text/html": render_html(snap), "text/plain": render_text(snap)})
                self._head_throttle.mark()
                self._tail_throttle.mark()
            else:
                self._draw_widget(snap, head=head, tail=tail)
            if head and snap.phase is not None:
                self._published_phase = snap.phase.name
            self.updates += 1

    def _draw_widget(self, snap: LiveSnapshot, *, head: bool, tail: bool) -> None:
        widget = self.widget
        assert widget is not None
        with widget.hold_sync():  # one message: the head and the lines it agrees with arrive together
            if tail:
                numbered, _, _, generation = self.tail.numbered()
                widget.lines = [[seq, ln.format(), ln.stream == "stderr"] for seq, ln in numbered]
                widget.generation = self._generation_base + generation
                widget.note = tail_note(snap)
                self._tail_throttle.mark()
            if head:
                widget.head = render_head_html(snap, framed=False)
                colour = RunStatus.FAILED if snap.error is not None else snap.status
                widget.accent = markup.status_colour(colour)
                self._head_throttle.mark()
        if self._display is not None and self.updates == 0:
            # The cell shows the widget; a front end without widgets shows the text or the HTML.
            self._display({WIDGET_MIME: {"version_major": 2, "version_minor": 1, "model_id": widget.model_id},
                           "text/plain": render_text(snap), "text/html": render_html(snap)})

    def _publish_end(self) -> None:
        """The summary (or why the job did not start), in place of the live view."""
        with self._publish_lock:
            snap = self.snapshot()
            html, text = render_html(snap), render_text(snap)
            if self.widget is None:
                assert self.publish is not None
                self.publish({"text/html": html, "text/plain": text})
            elif self._display is not None:
                # The cell keeps plain HTML (what a saved notebook shows); the widget is done.
                self._display({"text/html": html, "text/plain": text})
                self._close_widget()
            else:
                self._draw_widget(snap, head=False, tail=True)
                colour = snap.summary.status if snap.summary is not None else RunStatus.FAILED
                with self.widget.hold_sync():
                    self.widget.head = render_summary_html(snap.summary) if snap.summary is not None else (
                        render_head_html(snap, framed=False))
                    self.widget.accent = markup.status_colour(colour)
                    self.widget.tail_label = f"last lines of {snap.ranks_label}"
                    self.widget.over = snap.summary is not None
            self.updates += 1

    def _close_widget(self) -> None:
        widget = self.widget
        if widget is None or widget.comm is None:
            return
        # Emptied first: a notebook that saves widget state (nbclient does) keeps no stale copy of the log.
        with widget.hold_sync():
            widget.lines, widget.head, widget.note = [], "", ""
        widget.close()

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            head, tail = self._due()
            if head or tail:
                try:
                    self._publish(head=head, tail=tail)
                except Exception:  # noqa: BLE001 - a display hiccup must not end the view
                    pass
                continue
            delay, waiting = self._until_due()
            if waiting:
                # Throttled: sleep it out. New lines must not wake this thread (in a flood they come
                # thousands of times a second, and a spinning refresher would slow the pump).
                if self._stop.wait(delay):
                    return
            else:
                self._wake.wait(delay)  # new output, or the clock's tick
                self._wake.clear()  # the flags say what is new: nothing is lost by clearing

    def _due(self) -> tuple[bool, bool]:
        """What to publish now, taking the flags: ``(head, tail)``."""
        now = time.monotonic()
        with self._lock:
            head_free = self._head_throttle.delay() == 0.0
            tail = self._tail_dirty and self._tail_throttle.delay() == 0.0
            head = (
                (tail and self._moved)  # progress or phase moved with these lines: they go together
                or (head_free and (self._head_dirty or now >= self._next_clock))
            )
            if self.widget is None:  # whole renderings, one rate for all
                if not head_free or not (head or tail):
                    return False, False
                head = tail = True
            if tail:
                self._tail_dirty = False
            if head:
                self._head_dirty = self._moved = False
                self._next_clock = now + CLOCK_TICK_S
        return head, tail

    def _until_due(self) -> tuple[float, bool]:
        """Seconds until something may be published, and whether something waits for a throttle
        (the flags and the delays read together: a line marked in between is not slept through)."""
        now = time.monotonic()
        with self._lock:
            head_delay = self._head_throttle.delay()
            waits = [max(self._next_clock - now, head_delay)]
            if self._tail_dirty:
                waits.append(self._tail_throttle.delay())
            if self._head_dirty:
                waits.append(head_delay)
            waiting = self._tail_dirty or self._head_dirty
        return max(0.001, min(waits)), waiting


def _data_path(plan: LaunchPlan) -> str | None:
    path = plan.config.data.get("path") if isinstance(plan.config.data, Mapping) else None
    return str(path) if path else None
