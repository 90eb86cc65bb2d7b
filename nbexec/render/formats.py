"""How numbers and events read, in every view: the CLI, the terminal sink, reprs, HTML and text.

A metric is formatted here and nowhere else (:func:`metric_value`, :func:`metrics_line`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def duration(seconds: float) -> str:
    """``4.2 s``, ``2 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metric_value(value: object, digits: int = 4) -> str:
    """A metric (or a param) as people read it: ``digits`` significant digits for floats, the rest as is."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}g}"
    return str(value)  # ints stay whole (a step count is not 1.234e+04); nan and inf as Python writes them


def metrics_line(metrics: Mapping[str, object]) -> str:
    """``loss=0.8123 accuracy=0.51`` (empty when there are none)."""
    return " ".join(f"{k}={metric_value(v)}" for k, v in metrics.items())


def progress_fraction(progress: Mapping[str, Any] | None) -> float | None:
    """step / total of a progress event; None when the total is unknown."""
    if not progress:
        return None
    step, total = progress.get("step"), progress.get("total")
    if not isinstance(step, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return None
    return max(0.0, min(1.0, step / total))


def progress_label(progress: Mapping[str, Any] | None) -> str:
    """``step 50/250 (20%) · epoch 1 · 4.2 steps/s · ETA 47.6 s``; ``waiting for the first step`` before any.

    Progress read off a script's own tqdm bar (``source: "text"``) is
    prefixed with the bar's description, e.g. ``Epoch 0: step 9/20 (45%)``.
    """
    if not progress:
        return "waiting for the first step"
    step, total = progress.get("step"), progress.get("total")
    text = f"step {step}"
    fraction = progress_fraction(progress)
    if fraction is not None:
        text = f"step {step}/{total} ({fraction:.0%})"
    desc = progress.get("desc")
    if desc:
        text = f"{desc}: {text}"
    epoch = progress.get("epoch")
    if epoch is not None:
        epochs = progress.get("epochs")
        text += f" · epoch {epoch}" + (f"/{epochs}" if epochs is not None else "")
    rate = progress.get("rate")
    if isinstance(rate, (int, float)) and rate > 0:
        text += f" · {rate:.3g} steps/s"
    eta = progress.get("eta_s")
    if isinstance(eta, (int, float)) and (fraction is None or fraction < 1):
        text += f" · ETA {duration(eta)}"
    return text


def text_bar(fraction: float | None, width: int = 24) -> str:
    """``[#########...............]`` for plain-text views."""
    filled = 0 if fraction is None else round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"
