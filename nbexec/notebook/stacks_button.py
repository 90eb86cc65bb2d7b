"""The Stacks button of a running job (the ``%train`` cell and the training panel).

Clicking it takes the stack of every thread of every rank now
(:meth:`TrainingRun.stacks <nbexec.runner.handle.TrainingRun.stacks>`) and shows
the ranks side by side below it (:mod:`nbexec.render.stacks`); they are saved to
``logs/stacks-<time>.txt`` too. When nbexec finds the job stalled, the stacks it
took show there by themselves. A runner sink, so it follows the run: enabled
while it runs, hidden once it is over (the stacks shown stay).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import ipywidgets as widgets

from nbexec.render import markup
from nbexec.render.stacks import stacks_html
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.events import Event
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun
    from nbexec.stacks.snapshot import StackSnapshot


class StacksButton(Sink):
    """A "Stacks" button and the place the stacks it takes show.

    Attributes:
        button: the button (disabled until the job runs).
        output: the HTML the stacks show in.
        widget: both, one under the other.
        last: the stacks shown last (None before any).
    """

    wants_lines = False

    def __init__(self) -> None:
        self.button = widgets.Button(description="Stacks", icon="list", disabled=True,
                                     tooltip="where every rank is now: each thread's stack, without stopping the job")
        self.output = widgets.HTML(value="")
        self.widget = widgets.VBox([self.button, self.output])
        self.button.add_class("nbexec-stacks-button")
        self.last: StackSnapshot | None = None
        self._run: TrainingRun | None = None
        self._lock = threading.Lock()
        self.button.on_click(lambda _button: self.take())

    def reset(self) -> None:
        """Forget the last run's stacks (a new run is about to start)."""
        self._run, self.last = None, None
        self.output.value = ""
        self.button.disabled = True
        self.button.layout.display = None

    def take(self, *, block: bool = False) -> None:
        """Take the stacks in the background (the kernel stays free) and show them; ``block`` waits."""
        run = self._run
        if run is None:
            return
        worker = threading.Thread(target=self._take, args=(run,), name="nbexec-stacks", daemon=True)
        worker.start()
        if block:
            worker.join()

    def _take(self, run: TrainingRun) -> None:
        if not self._lock.acquire(blocking=False):
            return  # one request at a time: a second click while one runs does nothing
        try:
            self.button.description = "Stacks…"
            snap = run.stacks()
        except Exception as err:  # noqa: BLE001 - shown where the stacks would be
            self.output.value = f'<div style="color:{markup.STDERR_COLOUR}">{markup.esc(err)}</div>'
        else:
            self._show(snap)
        finally:
            self.button.description = "Stacks"
            self._lock.release()

    def _show(self, snap: StackSnapshot, note: str = "") -> None:
        self.last = snap
        head = f'<div style="color:{markup.STATUS_COLOURS["KILLED"]}">{markup.esc(note)}</div>' if note else ""
        self.output.value = head + stacks_html(snap)

    # --- Sink --------------------------------------------------------------------------

    def on_start(self, run: object) -> None:
        self._run = run  # type: ignore[assignment]
        self.button.disabled = False

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.get("kind") == "stall" and self._run is not None:
                stall = self._run.stall
                if stall is not None and stall.stacks is not None:
                    self._show(stall.stacks, f"stall: {stall.message}")

    def on_end(self, result: TrainingResult) -> None:
        self.button.disabled = True
        self.button.layout.display = "none"  # nothing left to take stacks of; what was shown stays
