"""The live run view as data (:class:`LiveSnapshot`) and its HTML and text renderings.

While a job runs the view shows its name and status, elapsed time, its phase
(starting, training, finishing), the resolved command (collapsed), a progress
bar fed by the trainer's progress events (steps/s, ETA), the latest metrics (a
small table), each rank's CPU, memory and GPU use, and the tail of the chosen
ranks' lines (stderr marked). Once it is over, the same place shows the summary
with the last lines collapsed below it. Nothing here touches a kernel: these
are pure functions of a snapshot. In a notebook the head (:func:`render_head_html`)
and the tail travel separately to a small front end that keeps the tail
following its newest line (:mod:`nbexec.notebook.live_widget`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbexec.render import formats, markup
from nbexec.render.summary import RunSummary, render_summary_html, render_summary_text
from nbexec.result import RunStatus
from nbexec.runner.lines import LogLine
from nbexec.runner.state import Phase

TAIL_HEIGHT_EM = 22  # the log pane scrolls past this


@dataclass(frozen=True)
class LiveSnapshot:
    """Everything one rendering of the view shows.

    Attributes:
        lines: the bounded tail of the chosen ranks' lines, oldest first.
        ranks_label: which ranks those are, in words (``rank 0``).
        hidden: earlier lines of those ranks no longer in the tail.
        dropped: lines skipped because output came faster than it could be shown.
        log_paths: ``(name, path)`` of the log files that hold every line.
        phase: what the job is doing (starting, training, finishing, stopping).
        resources: the latest ``resources`` event (CPU, memory, GPU of each rank).
        summary: set once the run is over.
        error: set when the run could not start (nothing ran).
    """

    run_name: str
    status: RunStatus
    elapsed_s: float
    nproc: int
    backend: str
    command: str
    run_dir: str
    log_dir: str = ""
    lines: tuple[LogLine, ...] = ()
    ranks_label: str = "rank 0"
    hidden: int = 0
    dropped: int = 0
    quiet: bool = False
    progress: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    log_paths: tuple[tuple[str, str], ...] = ()
    phase: Phase | None = None
    resources: Mapping[str, Any] | None = None
    summary: RunSummary | None = None
    error: str | None = None
    stall: str | None = None  # what nbexec said when it found the job stalled (while it still is)


def render_html(snap: LiveSnapshot) -> str:
    """The view as one piece of HTML: live while running, the summary once over.

    What a front end without the live widget shows (and a saved notebook keeps).
    """
    if snap.summary is not None:
        inner = render_summary_html(snap.summary)
        if not snap.quiet and snap.lines:
            inner += markup.details(f"last lines of {snap.ranks_label}", _tail_html(snap))
        return markup.box(markup.status_colour(snap.summary.status), inner)
    head = render_head_html(snap, framed=False)
    tail = _tail_html(snap) if not snap.quiet and snap.error is None else ""
    colour = markup.status_colour(RunStatus.FAILED if snap.error is not None else snap.status)
    return markup.box(colour, head + tail)


def render_head_html(snap: LiveSnapshot, *, framed: bool = True) -> str:
    """Everything above the log tail while the job runs: name, status, phase, command, progress,
    metrics (a small table), resource use (a row per rank)."""
    status = snap.status
    parts = [
        f"<div><b>{markup.esc(snap.run_name)}</b> {markup.badge(status)} "
        f'<span style="{markup.MUTED}">{markup.esc(formats.duration(snap.elapsed_s))} · '
        f"{snap.nproc} × {markup.esc(snap.backend)}</span>{_phase_html(snap)}</div>",
        markup.details("command", markup.pre(snap.command)),
    ]
    if snap.error is not None:
        colour = markup.status_colour(RunStatus.FAILED)
        parts.append(f'<div style="color:{colour};margin:4px 0">{markup.esc(snap.error)}</div>')
    else:
        fraction = formats.progress_fraction(snap.progress)
        parts.append(markup.progress_bar(fraction, status, formats.progress_label(snap.progress)))
        if snap.stall:
            colour = markup.status_colour(RunStatus.KILLED)
            parts.append(f'<div class="nbexec-stall" style="color:{colour};margin:4px 0">'
                         f"stall: {markup.esc(snap.stall)}</div>")
        if snap.metrics:
            values = {k: formats.metric_value(v) for k, v in snap.metrics.items()}
            parts.append(markup.row_table(values, css_class="nbexec-metrics"))
        rows = formats.resource_rows(snap.resources)
        if rows:
            headers = formats.RESOURCE_HEADERS[: len(rows[0])]
            parts.append(markup.grid(headers, rows, css_class="nbexec-resources"))
    inner = "".join(parts)
    if not framed:
        return inner
    colour = markup.status_colour(RunStatus.FAILED if snap.error is not None else status)
    return markup.box(colour, inner)


def _phase_html(snap: LiveSnapshot) -> str:
    if snap.phase is None or snap.status.is_terminal():
        return ""
    return (f' <span class="nbexec-phase" data-phase="{markup.esc(snap.phase.name.value)}" '
            f'style="{markup.MUTED}">· {markup.esc(snap.phase.label())}</span>')


def tail_note(snap: LiveSnapshot) -> str:
    """Which lines the tail shows and where every line is."""
    return _tail_note(snap)


def _tail_html(snap: LiveSnapshot) -> str:
    rows = []
    for ln in snap.lines:
        mark = "!" if ln.stream == "stderr" else ""
        text = f"[{ln.source}{mark}] {ln.text}"
        style = f' style="color:{markup.STDERR_COLOUR}"' if ln.stream == "stderr" else ""
        rows.append(f"<span{style}>{markup.esc(text)}</span>")
    if not rows:
        rows.append(f'<span style="{markup.MUTED}">(no output from {markup.esc(snap.ranks_label)} yet)</span>')
    pane = (
        f'<pre class="nbexec-tail" style="{markup.MONO};white-space:pre-wrap;margin:4px 0;'
        f"max-height:{TAIL_HEIGHT_EM}em;overflow:auto;background:{markup.PANE_BACKGROUND};"
        'color:inherit;padding:4px">' + "\n".join(rows) + "</pre>"
    )
    return pane + f'<div style="{markup.MUTED};font-size:12px">{markup.esc(_tail_note(snap))}</div>'


def _tail_note(snap: LiveSnapshot) -> str:
    note = f"{snap.ranks_label}"
    if snap.hidden:
        note += f", last {len(snap.lines)} lines ({snap.hidden:,} earlier not shown)"
    if snap.dropped:
        note += f"; {snap.dropped:,} lines skipped (output too fast to show)"
    logs = ", ".join(path for _, path in snap.log_paths) or snap.log_dir or snap.run_dir
    return f"{note}; every line is in {logs}"


def render_text(snap: LiveSnapshot) -> str:
    """The view as plain text (what a terminal, a text-only frontend or nbval sees)."""
    if snap.summary is not None:
        return render_summary_text(snap.summary)
    lines = [
        f"nbexec: {snap.run_name} {snap.status.value}, {formats.duration(snap.elapsed_s)}, "
        f"{snap.nproc} x {snap.backend}",
        f"  command:  {snap.command}",
    ]
    if snap.error is not None:
        lines.append(f"  error:    {snap.error}")
        return "\n".join(lines)
    if snap.phase is not None:
        lines.append(f"  phase:    {snap.phase.label()}")
    fraction = formats.progress_fraction(snap.progress)
    lines.append(f"  progress: {formats.text_bar(fraction)} {formats.progress_label(snap.progress)}")
    if snap.stall:
        lines.append(f"  stall:    {snap.stall}")
    if snap.metrics:
        lines.append(f"  metrics:  {formats.metrics_line(snap.metrics)}")
    if snap.resources:
        lines.append(f"  use:      {formats.resources_line(snap.resources)}")
    if not snap.quiet:
        lines += [ln.format() for ln in snap.lines]
        lines.append(f"  ({_tail_note(snap)})")
    return "\n".join(lines)


class Rendered:
    """An object IPython's ``display`` shows as HTML, with a text/plain fallback."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def rendered(snap: LiveSnapshot) -> Rendered:
    return Rendered(render_html(snap), render_text(snap))
