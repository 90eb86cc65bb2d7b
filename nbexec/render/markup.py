"""Small HTML building blocks for the views of runs and lineage: every piece of text is escaped here.

Views are inline-styled HTML (no CSS files, no JavaScript) so they render the
same in JupyterLab, classic Notebook, VS Code, Colab and a saved notebook.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from nbexec.result import RunStatus

# Status colours: tqdm's convention (green done, red failed) plus amber for killed.
STATUS_COLOURS: Mapping[str, str] = {
    RunStatus.PENDING.value: "#6b7280",
    RunStatus.RUNNING.value: "#2563eb",
    RunStatus.FINISHED.value: "#16a34a",
    RunStatus.FAILED.value: "#dc2626",
    RunStatus.KILLED.value: "#d97706",
}
STDERR_COLOUR = "#b91c1c"
MUTED = "color:#6b7280"
MONO = "font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px"


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def status_colour(status: RunStatus | str) -> str:
    return STATUS_COLOURS.get(str(status), STATUS_COLOURS[RunStatus.PENDING.value])


def badge(status: RunStatus | str) -> str:
    """A coloured status label."""
    return (
        f'<span style="background:{status_colour(status)};color:#fff;border-radius:3px;'
        f'padding:0 6px;font-weight:600;font-size:12px">{esc(status)}</span>'
    )


def details(summary: str, body_html: str, *, open_: bool = False) -> str:
    """A collapsed section; ``summary`` is plain text, ``body_html`` already HTML."""
    flag = " open" if open_ else ""
    return f"<details{flag}><summary>{esc(summary)}</summary>{body_html}</details>"


def pre(text: str, *, max_height_em: int | None = None) -> str:
    """Preformatted, escaped text (scrolls instead of growing past ``max_height_em``)."""
    limit = f";max-height:{max_height_em}em;overflow:auto" if max_height_em else ""
    return f'<pre style="{MONO};white-space:pre-wrap;margin:4px 0{limit}">{esc(text)}</pre>'


def table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of ``(name, value)``; cells are HTML (escape text with :func:`esc` first)."""
    cell = "padding:1px 10px 1px 0;text-align:left;vertical-align:top"
    body = "".join(f'<tr><td style="{cell};{MUTED}">{k}</td><td style="{cell}">{v}</td></tr>' for k, v in rows)
    return f'<table style="border-collapse:collapse;margin:4px 0">{body}</table>'


def row_table(values: Mapping[str, str]) -> str:
    """A compact two-row table: names on top, values below (scrolls sideways when wide)."""
    cell = "padding:1px 12px 1px 0;text-align:left"
    names = "".join(f'<th style="{cell};font-weight:normal;{MUTED}">{esc(k)}</th>' for k in values)
    cells = "".join(f'<td style="{cell};{MONO}">{esc(v)}</td>' for v in values.values())
    return (
        '<div style="overflow-x:auto;margin:4px 0"><table style="border-collapse:collapse">'
        f"<tr>{names}</tr><tr>{cells}</tr></table></div>"
    )


def progress_bar(fraction: float | None, status: RunStatus | str, label: str) -> str:
    """A bar (``fraction`` in 0..1, None: unknown total) in the status colour, with a text label."""
    colour = status_colour(status)
    width = 0.0 if fraction is None else max(0.0, min(1.0, fraction)) * 100
    return (
        '<div style="display:flex;align-items:center;gap:8px;margin:4px 0">'
        f'<div style="width:240px;height:10px;background:#e5e7eb;border-radius:5px;overflow:hidden">'
        f'<div style="width:{width:.1f}%;height:100%;background:{colour}"></div></div>'
        f'<span style="{MONO}">{esc(label)}</span></div>'
    )


def link_or_code(target: str) -> str:
    """An http(s) URL as a link; anything else (a shell command) as code."""
    if target.startswith(("http://", "https://")):
        return f'<a href="{esc(target)}" target="_blank" rel="noopener">{esc(target)}</a>'
    return f'<code style="{MONO}">{esc(target)}</code>'


def box(colour: str, inner_html: str) -> str:
    """The frame of a run view: a coloured left border."""
    return (
        f'<div class="nbexec-run" style="border-left:4px solid {colour};padding:4px 10px;'
        f'margin:2px 0;font-size:13px;line-height:1.4">{inner_html}</div>'
    )
