"""Loss curves from a run's metric events: an inline SVG that follows the notebook's theme, or a PNG.

    series = metric_series(run.events)        # {"loss": [(step, value), ...], ...}
    svg = loss_curve_svg(series)              # None when nothing loss-like was reported
    png = loss_curve_png(series)              # the same as a picture file (matplotlib)

The SVG is what notebooks show: its text and axes are ``currentColor`` and its
lines JupyterLab's theme colours (``--jp-*``), so it reads on the light and
the dark theme alike (a PNG has its colours baked in: white in a dark
notebook). It is plain markup, built here without matplotlib.

The PNG is built with ``matplotlib.figure.Figure`` and the Agg canvas, not
``pyplot``: no global figure state, no GUI backend, safe from the runner's
threads, and nothing is displayed by itself in whatever cell runs.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence

from nbexec.events import Event

Series = Mapping[str, Sequence[tuple[float, float]]]


def metric_series(events: Iterable[Event]) -> dict[str, list[tuple[float, float]]]:
    """Each metric's ``(step, value)`` points, in the order reported (rank 0's events).

    Events without a step are placed after the previous point of that metric.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    for ev in events:
        if ev.get("kind") != "metrics" or not isinstance(ev.get("metrics"), Mapping):
            continue
        if ev.get("rank", 0) not in (0, None):
            continue
        step = ev.get("step")
        for name, value in ev["metrics"].items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            points = series.setdefault(str(name), [])
            x = float(step) if isinstance(step, (int, float)) else (points[-1][0] + 1 if points else 0.0)
            points.append((x, float(value)))
    return series


def loss_names(series: Series) -> list[str]:
    """The metrics a loss curve shows: those named ``loss`` or ``*_loss``/``*loss``."""
    return sorted(name for name, points in series.items() if name.lower().endswith("loss") and points)


def loss_curve_png(series: Series, *, title: str | None = None, width_in: float = 6.0) -> bytes | None:
    """A PNG of the loss-like metrics against the step; None when there are none."""
    names = loss_names(series)
    if not names:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, width_in * 0.5), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in names:
        xs, ys = zip(*series[name])
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# Series colours: JupyterLab's theme colours first, matplotlib's defaults where there is no theme.
SERIES_COLOURS = (
    "var(--jp-brand-color1, #1f77b4)",
    "var(--jp-warn-color1, #ff7f0e)",
    "var(--jp-success-color1, #2ca02c)",
    "var(--jp-error-color1, #d62728)",
    "var(--jp-info-color1, #17becf)",
)
GRID_COLOUR = "var(--jp-border-color2, rgba(127,127,127,0.3))"
MAX_POINTS = 400  # per series: a curve of a million steps is still a few kB


def loss_curve_svg(
    series: Series, *, title: str | None = None, width: int = 600, height: int = 300
) -> str | None:
    """An inline ``<svg>`` of the loss-like metrics against the step; None when there are none."""
    names = loss_names(series)
    if not names:
        return None
    left, right, top, bottom = 64, 16, 28 if title else 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    points = {name: _thin(series[name]) for name in names}
    xs = [x for pts in points.values() for x, _ in pts]
    ys = [y for pts in points.values() for _, y in pts if math.isfinite(y)]
    if not ys:
        return None
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-9, y1 + abs(y1) * 0.1 + 1e-9

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg class="nbexec-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="loss curve" '
        'style="color:var(--jp-ui-font-color1, currentColor);font-family:var(--jp-ui-font-family, sans-serif);'
        'font-size:11px;max-width:100%">'
    ]
    if title:
        parts.append(f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" fill="currentColor" '
                     f'font-size="12">{html.escape(title)}</text>')
    for tick in _ticks(y0, y1):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">'
                     f"{_tick_label(tick)}</text>")
    for tick in _ticks(x0, x1):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="currentColor">'
                     f"{_tick_label(tick)}</text>")
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 'stroke="currentColor" stroke-opacity="0.5"/>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="currentColor">'
                 "step</text>")
    for i, name in enumerate(names):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points[name] if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        if len(points[name]) < 20:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>'
                      for x, y in points[name] if math.isfinite(y)]
        ly = top + 12 + i * 15
        lx = left + plot_w - 110
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 24}" y="{ly}" fill="currentColor">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most MAX_POINTS points, evenly picked (the first and the last kept)."""
    if len(points) <= MAX_POINTS:
        return list(points)
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) between ``lo`` and ``hi``."""
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks: list[float] = []
    value = first
    while value <= hi + step * 1e-9 and len(ticks) < 20:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:.4g}"
