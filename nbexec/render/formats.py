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


def size(n_bytes: float | None) -> str:
    """``412 MB``, ``3.1 GB`` (decimal units, as MLflow's system metrics); ``—`` when unknown."""
    if not isinstance(n_bytes, (int, float)) or isinstance(n_bytes, bool):
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n_bytes:.0f} B"


def percent(value: float | None) -> str:
    """``98%``; ``—`` when unknown (a rank's first sample has no CPU figure yet)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{value:.0f}%"


RESOURCE_HEADERS = ("rank", "CPU", "memory", "GPU", "GPU memory")


def resource_rows(sample: Mapping[str, Any] | None) -> list[tuple[str, ...]]:
    """One row per rank of a ``resources`` event (the GPU columns only when a rank has a GPU), then the host."""
    if not sample:
        return []
    ranks = sample.get("ranks") or {}
    gpus = any("gpu" in use for use in ranks.values())
    rows: list[tuple[str, ...]] = []
    for rank in sorted(ranks, key=lambda r: int(r) if str(r).isdigit() else 0):
        use = ranks[rank]
        row: tuple[str, ...] = (f"rank {rank}", percent(use.get("cpu_percent")), size(use.get("rss_bytes")))
        if gpus:
            gpu = f"cuda:{use['gpu']} {percent(use.get('gpu_util_percent'))}" if "gpu" in use else "—"
            row += (gpu, size(use.get("gpu_memory_bytes")))
        rows.append(row)
    host = sample.get("host") or {}
    if host:
        used, total = host.get("memory_used_bytes"), host.get("memory_total_bytes")
        memory = f"{size(used)} of {size(total)}" if total else size(used)
        rows.append(("host", percent(host.get("cpu_percent")), memory) + (("", "") if gpus else ()))
    return rows


def resources_line(sample: Mapping[str, Any] | None) -> str:
    """The rows of :func:`resource_rows` on one line: ``rank 0 CPU 98% 412 MB · rank 1 ... · host ...``."""
    parts = []
    for row in resource_rows(sample):
        name, cpu, memory, *gpu = row
        text = f"{name} CPU {cpu} mem {memory}"
        if gpu and gpu[0]:
            text += f" GPU {gpu[0]} {gpu[1]}"
        parts.append(text)
    return " · ".join(parts)


def stopped_at(last_step: int | None, total_steps: int | None) -> str:
    """``at step 420/1000`` (where a run stopped), ``at step 420``; empty when no step was reported."""
    if last_step is None:
        return ""
    return f"at step {last_step}/{total_steps}" if total_steps else f"at step {last_step}"


def text_bar(fraction: float | None, width: int = 24) -> str:
    """``[#########...............]`` for plain-text views."""
    filled = 0 if fraction is None else round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"
