"""Loss curves from a run's metric events, drawn with matplotlib into PNG bytes.

    series = metric_series(run.events)        # {"loss": [(step, value), ...], ...}
    png = loss_curve_png(series)              # None when nothing loss-like was reported

The figure is built with ``matplotlib.figure.Figure`` and the Agg canvas, not
``pyplot``: no global figure state, no GUI backend, safe from the runner's
threads, and nothing is displayed by itself in whatever cell runs.
"""

from __future__ import annotations

import io
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
