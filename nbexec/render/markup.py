"""Small HTML building blocks for the views of runs and lineage: every piece of text is escaped here.

Views are inline-styled HTML (no CSS files, no JavaScript) so they render the
same in JupyterLab, classic Notebook, VS Code, Colab and a saved notebook.

Every colour is one of JupyterLab's theme variables (``--jp-*``), so a view
follows the light and the dark theme; the value after the comma is used only
where no JupyterLab theme defines them (VS Code, Colab, an exported page).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from nbexec.result import RunStatus

# Status colours: tqdm's convention (green done, red failed) plus amber for killed.
STATUS_COLOURS: Mapping[str, str] = {
    RunStatus.PENDING.value: "var(--jp-border-color0, #6b7280)",
    RunStatus.RUNNING.value: "var(--jp-brand-color1, #2563eb)",
    RunStatus.FINISHED.value: "var(--jp-success-color1, #16a34a)",
    RunStatus.FAILED.value: "var(--jp-error-color1, #dc2626)",
    RunStatus.KILLED.value: "var(--jp-warn-color1, #d97706)",
}
STDERR_COLOUR = "var(--jp-error-color1, #b91c1c)"
MUTED = "color:var(--jp-ui-font-color2, #6b7280)"
BADGE_TEXT = "var(--jp-ui-inverse-font-color0, #fff)"  # on a status colour: white in light themes, black in dark
PANE_BACKGROUND = "var(--jp-layout-color2, rgba(127,127,127,0.08))"  # the log tail: a shade off the page
TRACK_COLOUR = "var(--jp-layout-color3, rgba(127,127,127,0.3))"  # the progress bar's empty part
MONO = "font-family:var(--jp-code-font-family, SFMono-Regular,Menlo,Consolas,monospace);font-size:12px"


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def status_colour(status: RunStatus | str) -> str:
    return STATUS_COLOURS.get(str(status), STATUS_COLOURS[RunStatus.PENDING.value])


def badge(status: RunStatus | str) -> str:
    """A coloured status label."""
    return (
        f'<span style="background:{status_colour(status)};color:{BADGE_TEXT};border-radius:3px;'
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


def row_table(values: Mapping[str, str], *, css_class: str = "") -> str:
    """A compact two-row table: names on top, values below (scrolls sideways when wide)."""
    cell = "padding:1px 12px 1px 0;text-align:left"
    names = "".join(f'<th style="{cell};font-weight:normal;{MUTED}">{esc(k)}</th>' for k in values)
    cells = "".join(f'<td style="{cell};{MONO}">{esc(v)}</td>' for v in values.values())
    klass = f' class="{esc(css_class)}"' if css_class else ""
    return (
        f'<div{klass} style="overflow-x:auto;margin:4px 0"><table style="border-collapse:collapse">'
        f"<tr>{names}</tr><tr>{cells}</tr></table></div>"
    )


def grid(headers: Iterable[str], rows: Iterable[Iterable[str]], *, css_class: str = "") -> str:
    """A small table with a header row; cells are plain text (escaped here). Scrolls sideways when wide."""
    cell = "padding:1px 12px 1px 0;text-align:left;white-space:nowrap"
    head = "".join(f'<th style="{cell};font-weight:normal;{MUTED}">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{cell};{MONO}">{esc(v)}</td>' for v in row) + "</tr>" for row in rows)
    klass = f' class="{esc(css_class)}"' if css_class else ""
    return (f'<div{klass} style="overflow-x:auto;margin:4px 0"><table style="border-collapse:collapse">'
            f"<tr>{head}</tr>{body}</table></div>")


def progress_bar(fraction: float | None, status: RunStatus | str, label: str) -> str:
    """A bar (``fraction`` in 0..1, None: unknown total) in the status colour, with a text label."""
    colour = status_colour(status)
    width = 0.0 if fraction is None else max(0.0, min(1.0, fraction)) * 100
    return (
        '<div class="nbexec-progress" style="display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin:4px 0">'
        f'<div style="width:240px;height:10px;background:{TRACK_COLOUR};border-radius:5px;overflow:hidden">'
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
