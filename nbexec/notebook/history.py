"""Recent runs of an experiment, read back from MLflow: the panel's run history.

    rows = recent_runs("sqlite:////abs/mlflow.db", "nbexec", limit=10)
    render_history_html(rows, tracking_uri=...)   # the table
    run_config(tracking_uri, rows[0].run_id)      # that run's config, for the form

Everything comes from the tracking store (not the run directories, which may
be gone): name, status, times and params from the run, the config from the
``config.yaml`` artifact nbexec uploads (rebuilt from the params when the
artifact is missing, e.g. a run killed before its end).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbexec import contract
from nbexec.notebook.theme import BORDER_COLOUR, MUTED_COLOUR
from nbexec.render import formats, markup
from nbexec.render.links import run_url, server_url

# params shown as columns (the rest are in MLflow), in this order
KEY_PARAMS: tuple[tuple[str, str], ...] = (
    ("model.backbone", "backbone"),
    ("training.learning_rate", "lr"),
    ("training.batch_size", "batch"),
    ("training.epochs", "epochs"),
    ("launch.nproc", "nproc"),
)
MAX_METRICS = 4  # metrics shown per row
BOOKKEEPING = frozenset({"epoch", "step", "learning_rate", "lr"})  # metrics not worth a history column
# Cells wrap (the table never gets wider than the panel); the run name may break anywhere.
CELL = "padding:1px 8px 1px 0;text-align:left;vertical-align:top"
NOWRAP_CELL = f"{CELL};white-space:nowrap"
NAME_CELL = f"{CELL};overflow-wrap:anywhere;min-width:9em"


@dataclass(frozen=True)
class RunRow:
    """One past run, as the history table shows it.

    Attributes:
        start_time: seconds since the epoch.
        duration_s: None while the run has not ended.
        params: every param of the run (flattened config).
        metrics: the latest value of each metric.
    """

    run_id: str
    name: str
    status: str
    start_time: float
    duration_s: float | None
    experiment_id: str
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short text for a picker: name, status and start time."""
        return f"{self.name} · {self.status} · {started(self.start_time)}"


def recent_runs(tracking_uri: str, experiment: str, *, limit: int = 10) -> list[RunRow]:
    """The ``limit`` most recently started top-level runs of ``experiment`` (newest first).

    Returns an empty list when the experiment (or the store) does not exist yet:
    a SQLite store is never created here (nbexec makes it whole when a job starts).
    """
    from nbexec.tracking.store import get_client, sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        return []
    client = get_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="tags.mlflow.parentRunId IS NULL",  # child runs belong to their parent's row
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    rows = []
    for run in runs:
        info, data = run.info, run.data
        start = (info.start_time or 0) / 1000
        duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        rows.append(
            RunRow(
                run_id=info.run_id,
                name=info.run_name or data.tags.get("mlflow.runName", info.run_id),
                status=info.status,
                start_time=start,
                duration_s=duration,
                experiment_id=info.experiment_id,
                params=dict(data.params),
                metrics=dict(data.metrics),
            )
        )
    return rows


def run_config(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The config a past run was launched with, as a dict for a new run.

    Read from the run's ``config.yaml`` artifact (secrets were never in it);
    rebuilt from the params when the artifact is missing. ``output.run_name``
    is cleared so the next run gets a name of its own.
    """
    import yaml

    from nbexec.tracking.store import get_client

    client = get_client(tracking_uri)
    raw: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="nbexec-history-") as tmp:
        try:
            path = client.download_artifacts(run_id, contract.CONFIG_FILE, tmp)
        except Exception:  # noqa: BLE001 - no artifact (e.g. killed before upload): use the params
            path = None
        if path is not None and Path(path).is_file():
            loaded = yaml.safe_load(Path(path).read_text())
            raw = loaded if isinstance(loaded, dict) else None
    if raw is None:
        raw = config_from_params(client.get_run(run_id).data.params)
    raw.setdefault("output", {})["run_name"] = None
    return raw


def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """Nest flattened params (``training.learning_rate`` -> ``{"training": {...}}``), values read
    as config values are (:func:`nbexec.config.parse_value`: ``1e-05`` is a float)."""
    from nbexec.config import parse_value

    out: dict[str, Any] = {}
    for key, text in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(text)
    return out


def render_history_html(rows: Sequence[RunRow], *, tracking_uri: str | None = None) -> str:
    """The history as an HTML table that fits its container (the panel).

    Long cells wrap instead of widening the table: run names break at their
    hyphens, metrics go one per line. A run's name links to its MLflow page
    whenever one is known (a tracking server, or a UI nbexec started on the
    store: :func:`nbexec.render.links.server_url`); its id is the link's title.
    """
    if not rows:
        return f'<div style="color:{MUTED_COLOUR}">no runs in this experiment yet</div>'
    server = server_url(tracking_uri)
    head = ["run", "status", "started", "duration", *(label for _, label in KEY_PARAMS), "metrics"]
    body = []
    for row in rows:
        name = f"<b>{markup.esc(row.name)}</b>"
        if server:
            url = run_url(server, row.run_id, row.experiment_id)
            name = f'<a href="{markup.esc(url)}" target="_blank" rel="noopener" title="MLflow run {row.run_id}">{name}</a>'
        metrics = "<br>".join(
            markup.esc(f"{key}={formats.metric_value(value)}") for key, value in key_metrics(row.metrics)
        )
        date, _, clock = started(row.start_time).partition(" ")
        cells = [
            (name, NAME_CELL),
            (markup.badge(row.status), NOWRAP_CELL),
            (f"{markup.esc(date)} {markup.esc(clock)}", CELL),
            (markup.esc(formats.duration(row.duration_s) if row.duration_s is not None else "—"), NOWRAP_CELL),
            *((markup.esc(row.params.get(key, "")), CELL) for key, _ in KEY_PARAMS),
            (metrics or "—", CELL),
        ]
        body.append("<tr>" + "".join(f'<td style="{style}">{c}</td>' for c, style in cells) + "</tr>")
    header = "".join(f'<th style="{CELL};color:{MUTED_COLOUR};font-weight:normal">{markup.esc(h)}</th>' for h in head)
    return (
        '<div style="max-width:100%;margin:4px 0;line-height:1.4">'  # the widget's own line height is a row's
        f'<table class="nbexec-history" style="width:100%;border-collapse:collapse">'
        f'<tr style="border-bottom:1px solid {BORDER_COLOUR}">{header}</tr>{"".join(body)}</table></div>'
    )


def render_history_text(rows: Sequence[RunRow]) -> str:
    """The history as plain text, one run per line."""
    if not rows:
        return "no runs in this experiment yet"
    lines = []
    for row in rows:
        params = " ".join(f"{label}={row.params[key]}" for key, label in KEY_PARAMS if key in row.params)
        metrics = formats.metrics_line(dict(key_metrics(row.metrics)))
        lines.append(f"{row.name} {row.status} {params} {metrics}".rstrip())
    return "\n".join(lines)


def key_metrics(metrics: Mapping[str, float], limit: int = MAX_METRICS) -> list[tuple[str, float]]:
    """The metrics worth a column: validation ones first, then losses, then the rest
    (bookkeeping such as ``epoch`` and ``learning_rate`` left out)."""

    def rank(name: str) -> tuple[int, str]:
        low = name.lower()
        return (0 if low.startswith("val") else 1 if "loss" in low else 2, name)

    kept = [name for name in metrics if name.lower() not in BOOKKEEPING]
    return [(name, metrics[name]) for name in sorted(kept, key=rank)[:limit]]


def started(timestamp: float) -> str:
    """Local start time: ``2026-11-26 07:15:02``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
