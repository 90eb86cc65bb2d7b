"""The trials of a sweep as an HTML table (state colours as in the run views)."""

from __future__ import annotations

from collections.abc import Sequence

from nbexec.hpo.trial import TrialRecord
from nbexec.render import formats, markup

_STATE_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED", "RUNNING": "RUNNING"}


def render_trials_html(trials: Sequence[TrialRecord], objective: str, *, status: str | None = None,
                       best: TrialRecord | None = None, title: str | None = None) -> str:
    """One row per trial: number, state, objective, duration, params, failure; the best one in bold."""
    names = sorted({k for t in trials for k in t.params})
    cell = "padding:1px 10px 1px 0;text-align:left;vertical-align:top"
    head = "".join(f'<th style="{cell};font-weight:normal;{markup.MUTED}">{markup.esc(h)}</th>'
                   for h in ("trial", "state", objective, "time", *names, ""))
    rows = []
    for t in trials:
        weight = ";font-weight:600" if best is not None and t.number == best.number else ""
        values = [
            str(t.number),
            _badge(t.state),
            markup.esc(formats.metric_value(t.value)) if t.value is not None else "",
            markup.esc(formats.duration(t.duration_s)) if t.duration_s is not None else "",
            *(markup.esc(formats.metric_value(t.params[n])) if n in t.params else "" for n in names),
            markup.esc(t.failure or "") if t.state == "FAIL" else "",
        ]
        rows.append("<tr>" + "".join(f'<td style="{cell}{weight}">{v}</td>' for v in values) + "</tr>")
    caption = f"<div><b>{markup.esc(title)}</b></div>" if title else ""
    footer = f'<div style="{markup.MUTED}">{markup.esc(status)}</div>' if status else ""
    return (f'<div class="nbexec-hpo">{caption}<table style="border-collapse:collapse;margin:4px 0">'
            f"<tr>{head}</tr>{''.join(rows)}</table>{footer}</div>")


def _badge(state: str) -> str:
    """The trial state, coloured as the run status it matches (PRUNED amber like KILLED)."""
    colour = markup.status_colour(_STATE_STATUS.get(state, state))
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 6px;'
            f'font-weight:600;font-size:12px">{markup.esc(state)}</span>')
