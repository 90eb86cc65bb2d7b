"""The panel's "recent runs": a table of an experiment's runs read from MLflow, and a picker.

    box = RunHistoryBox(on_pick=panel.load_run)
    box.refresh(tracking_uri, "my-experiment")   # or refresh(None, ...) when tracking is off
    box.widget                                     # the table, the picker and a Refresh button

Picking a run calls ``on_pick(run_id)`` (the panel loads that run's config).
Refreshes may come from any thread (the initial one, the runner's at a run's
end, the Refresh button): they are serialized, and the picker is refilled
without firing ``on_pick``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets

from nbexec.notebook.history import RunRow, recent_runs, render_history_html
from nbexec.render import markup

HISTORY_LIMIT = 10  # runs in the history table
PROMPT = ("pick a run to load its config", "")


class RunHistoryBox:
    """Recent runs of one experiment, with a picker that hands a run id to ``on_pick``.

    Attributes:
        table, picker, refresh_button: the parts; ``widget`` holds them.
        rows: the runs shown (newest first).
        ready: set after each refresh.
    """

    def __init__(self, on_pick: Callable[[str], None], *, limit: int = HISTORY_LIMIT) -> None:
        self.limit = limit
        self.rows: list[RunRow] = []
        self.ready = threading.Event()
        self._on_pick = on_pick
        self._lock = threading.Lock()
        self.table = widgets.HTML(value="")
        self.picker = widgets.Dropdown(options=[PROMPT], value="", description="load config of",
                                       layout=widgets.Layout(width="520px"))
        self.picker.style.description_width = "110px"
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.widget = widgets.VBox([
            widgets.HTML(value="<b>recent runs</b>"),
            widgets.HBox([self.picker, self.refresh_button]),
            self.table,
        ])
        self.picker.observe(self._picked, names="value")

    def refresh(self, tracking_uri: str | None, experiment: str) -> None:
        """Read the runs again (``tracking_uri`` None: tracking is off, nothing to show)."""
        with self._lock:
            try:
                if tracking_uri is None:
                    rows, html = [], f'<div style="{markup.MUTED}">tracking is off: no run history</div>'
                else:
                    rows = recent_runs(tracking_uri, experiment, limit=self.limit)
                    html = render_history_html(rows, tracking_uri=tracking_uri)
            except Exception as err:  # noqa: BLE001 - the store being away must not break the panel
                rows = []
                html = f'<div style="color:{markup.STDERR_COLOUR}">run history unavailable: {markup.esc(err)}</div>'
            self.rows = rows
            self.table.value = html
            picked = self.picker.value
            self.picker.unobserve(self._picked, names="value")
            try:
                self.picker.options = [PROMPT] + [(row.label, row.run_id) for row in rows]
                self.picker.value = picked if picked in {r.run_id for r in rows} else ""
            finally:
                self.picker.observe(self._picked, names="value")
            self.ready.set()

    def name_of(self, run_id: str) -> str:
        """The run's name if it is in the table, else the start of its id."""
        return next((row.name for row in self.rows if row.run_id == run_id), run_id[:12])

    def _picked(self, change: Mapping[str, Any]) -> None:
        if change["new"]:
            self._on_pick(change["new"])
