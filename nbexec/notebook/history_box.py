"""The panel's "recent runs": a table of an experiment's runs read from MLflow, and a picker.

    box = RunHistoryBox(on_pick=panel.load_run)
    box.refresh(tracking_uri, "my-experiment")   # or refresh(None, ...) when tracking is off
    box.widget                                     # the table, the picker and a Refresh button

Picking a run calls ``on_pick(run_id)`` (the panel loads that run's config). The
picker shows whose config the form holds: the panel calls :meth:`show_loaded`
with the run it loaded, or None once the form holds something else (a config
loaded from a file, a field edited), so the picker never keeps a stale choice and
picking the same run again loads it again. While the panel's job runs,
:meth:`show_running` names it above the table (its row appears once it ends).
Refreshes may come from any thread (the initial one, the runner's at a run's end,
the Refresh button): they are serialized, and the picker is refilled without
firing ``on_pick``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets

from nbexec.notebook.history import RunRow, recent_runs, render_history_html
from nbexec.notebook.theme import ERROR_COLOUR, MUTED_COLOUR
from nbexec.render import markup

HISTORY_LIMIT = 10  # runs in the history table
PROMPT = ("pick a run to load its config", "")


class RunHistoryBox:
    """Recent runs of one experiment, with a picker that hands a run id to ``on_pick``.

    Attributes:
        table, picker, refresh_button: the parts; ``widget`` holds them.
        heading: names the experiment the table lists.
        rows: the runs shown (newest first).
        experiment: the experiment of the last refresh.
        ready: set after each refresh.
    """

    def __init__(self, on_pick: Callable[[str], None], *, limit: int = HISTORY_LIMIT) -> None:
        self.limit = limit
        self.rows: list[RunRow] = []
        self.experiment: str | None = None
        self.ready = threading.Event()
        self._on_pick = on_pick
        self._lock = threading.Lock()
        self._running: str | None = None  # the name of the panel's job while it runs
        self._tracking_uri: str | None = None
        self._refreshed = False
        self.heading = widgets.HTML(value="<b>recent runs</b>")
        # as wide as the panel, margins included: the table inside wraps to fit it
        self.table = widgets.HTML(value="", layout=widgets.Layout(width="100%", margin="0px"))
        self.picker = widgets.Dropdown(options=[PROMPT], value="", description="load config of",
                                       layout=widgets.Layout(width="520px"))
        self.picker.style.description_width = "110px"
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.widget = widgets.VBox([
            self.heading,
            widgets.HBox([self.picker, self.refresh_button]),
            self.table,
        ])
        self.picker.observe(self._picked, names="value")

    def refresh(self, tracking_uri: str | None, experiment: str) -> None:
        """Read the runs again (``tracking_uri`` None: tracking is off, nothing to show)."""
        with self._lock:
            self._tracking_uri, self.experiment = tracking_uri, experiment
            try:
                rows = [] if tracking_uri is None else recent_runs(tracking_uri, experiment, limit=self.limit)
                error = None
            except Exception as err:  # noqa: BLE001 - the store being away must not break the panel
                rows, error = [], err
            self.rows = rows
            self._refreshed = True
            self._draw(error)
            picked = self.picker.value
            self._set_picker([PROMPT] + [(row.label, row.run_id) for row in rows],
                             picked if picked in {r.run_id for r in rows} else "")
            self.ready.set()

    def show_running(self, name: str | None) -> None:
        """The panel's job ``name`` runs now (None: it has ended); said above the table."""
        with self._lock:
            self._running = name
            if self._refreshed:
                self._draw(None)

    def show_loaded(self, run_id: str | None) -> None:
        """The form holds the config of ``run_id`` (None: of no listed run); the picker says so."""
        with self._lock:
            known = run_id is not None and run_id in {r.run_id for r in self.rows}
            self._set_picker(None, run_id if known and run_id is not None else "")

    def name_of(self, run_id: str) -> str:
        """The run's name if it is in the table, else the start of its id."""
        return next((row.name for row in self.rows if row.run_id == run_id), run_id[:12])

    def _draw(self, error: BaseException | None) -> None:
        experiment = markup.esc(self.experiment or "")
        self.heading.value = f"<b>recent runs</b> in experiment <b>{experiment}</b>" if experiment else "<b>recent runs</b>"
        running = self._running if self._running not in {r.name for r in self.rows} else None
        note = ""
        if running is not None:
            note = (f'<div style="color:{MUTED_COLOUR}">{markup.esc(running)} is running; '
                    "it is listed here once it ends</div>")
        if self._tracking_uri is None:
            body = f'<div style="color:{MUTED_COLOUR}">tracking is off: no run history</div>'
        elif error is not None:
            body = f'<div style="color:{ERROR_COLOUR}">run history unavailable: {markup.esc(error)}</div>'
        elif not self.rows and running is not None:
            body = ""  # the note says it: the first run of the experiment is under way
        else:
            body = render_history_html(self.rows, tracking_uri=self._tracking_uri)
        self.table.value = note + body

    def _set_picker(self, options: list[Any] | None, value: str) -> None:
        """Refill (``options``) and/or move the picker without calling ``on_pick``."""
        self.picker.unobserve(self._picked, names="value")
        try:
            if options is not None:
                self.picker.options = options
            self.picker.value = value
        finally:
            self.picker.observe(self._picked, names="value")

    def _picked(self, change: Mapping[str, Any]) -> None:
        if change["new"]:
            self._on_pick(change["new"])
