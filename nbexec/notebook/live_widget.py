"""The live view's front end: a small widget whose log tail follows its newest line, as a terminal does.

A display output replaced as a whole at each redraw (``update_display_data``)
cannot keep a log pane's scroll position: the new HTML starts at the top, so
the newest lines are hidden and a reader who scrolls is thrown back within a
second. This widget (an `anywidget <https://anywidget.dev>`_: a few lines of
JavaScript shipped as text, no JupyterLab extension to build) receives the
head of the view as HTML and the tail as numbered lines; the browser appends
only the lines it has not shown yet and keeps the pane at the bottom while the
reader is there (``static/live_view.js``).

Traits the kernel sets (the front end only reads them):

- ``head``: HTML of everything above the tail (:func:`nbexec.render.live.render_head_html`,
  or the summary once the run is over);
- ``accent``: the frame's colour (the status colour, a ``--jp-*`` variable);
- ``lines``: ``[number, text, is_stderr]`` of the tail's lines, oldest first
  (number -1: a stream's unfinished line, e.g. a ``\\r`` progress bar, shown last);
- ``generation``: changes when another choice of ranks replaces the lines;
- ``over``: the run is over (the tail collapses under ``tail_label``);
- ``note``: which lines are shown and where every line is.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).with_name("static")


class LiveViewWidget(anywidget.AnyWidget):  # type: ignore[misc]
    """The live run view in the browser (see the module's docstring)."""

    _esm = (STATIC / "live_view.js").read_text(encoding="utf-8")
    _css = (STATIC / "live_view.css").read_text(encoding="utf-8")

    head = traitlets.Unicode("").tag(sync=True)
    accent = traitlets.Unicode("").tag(sync=True)
    lines: traitlets.List[list[object]] = traitlets.List().tag(sync=True)
    generation = traitlets.Int(0).tag(sync=True)
    over = traitlets.Bool(False).tag(sync=True)
    quiet = traitlets.Bool(False).tag(sync=True)
    tail_label = traitlets.Unicode("").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_class("nbexec-live-widget")  # a hook for styling and for browser tests

    @property
    def value(self) -> str:
        """What the widget shows, as HTML: its head, then its lines (for code that reads the view)."""
        from nbexec.render import markup

        lines = "\n".join(markup.esc(text) for _, text, _ in self.lines)
        return (f"{self.head}<details><summary>{markup.esc(self.tail_label)}</summary>"
                f"<pre>{lines}</pre></details><div>{markup.esc(self.note)}</div>")


__all__ = ["LiveViewWidget"]
