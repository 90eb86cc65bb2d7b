"""The lineage table as HTML: each MLflow run id a link when a tracking server URL is known."""

from __future__ import annotations

from nbexec.lineage.record import Lineage
from nbexec.lineage.view import lineage_rows, run_url
from nbexec.render import markup


def render_lineage_table_html(lineage: Lineage, *, tracking_url: str | None = None) -> str:
    """The rows of :func:`nbexec.lineage.view.lineage_rows` as a two-column table (values escaped)."""
    experiments = _experiments(lineage)
    rows = []
    for what, value, run_id in lineage_rows(lineage):
        cell = markup.esc(value)
        if run_id:
            if tracking_url:
                href = run_url(tracking_url, run_id, experiments.get(run_id))
                ref = f'<a href="{markup.esc(href)}" target="_blank" rel="noopener"><code>{markup.esc(run_id)}</code></a>'
            else:
                ref = f"<code>{markup.esc(run_id)}</code>"
            cell += f"<br>MLflow run {ref}"
        if what == "missing":
            cell = f'<span style="color:{markup.STATUS_COLOURS["KILLED"]}">{cell}</span>'
        rows.append((markup.esc(what), cell))
    return markup.table(rows)


def render_lineage_html(lineage: Lineage, *, tracking_url: str | None = None) -> str:
    """The lineage table in an open ``lineage`` section, as a notebook shows a record."""
    return markup.details("lineage", render_lineage_table_html(lineage, tracking_url=tracking_url), open_=True)


def _experiments(lineage: Lineage) -> dict[str, str]:
    out: dict[str, str] = {}
    study, trial, run = lineage.study, lineage.best_trial, lineage.final_run
    if study is not None and study.mlflow_experiment_id:
        for run_id in (study.mlflow_run_id, trial.mlflow_run_id if trial else None):
            if run_id:
                out[run_id] = study.mlflow_experiment_id
    if run is not None and run.mlflow_run_id and run.mlflow_experiment_id:
        out[run.mlflow_run_id] = run.mlflow_experiment_id
    return out
