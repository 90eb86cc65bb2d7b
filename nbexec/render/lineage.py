"""The lineage table: a record's rows, as aligned text (``nbexec lineage PATH``) and as HTML.

The rows follow the chain data -> study -> best trial -> run -> checkpoint ->
backup. A row may name an MLflow run: text shows its id after the value, HTML
links it to the run's page when a tracking server's URL is known. The run
summary's lineage is these rows too (a run without a study has fewer of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec.render import markup
from nbexec.render.formats import metric_value
from nbexec.render.links import run_url

if TYPE_CHECKING:
    from nbexec.lineage.record import Lineage

Row = tuple[str, str, "str | None"]  # (what, value, the MLflow run id it names)


def lineage_rows(lineage: Lineage) -> list[Row]:
    """The table's rows, in lineage order: data -> study -> best trial -> run -> checkpoint -> backup."""
    rows: list[Row] = []
    data = lineage.data
    if data is not None:
        fp = f" (fingerprint {data.fingerprint[:16]})" if data.fingerprint else " (no fingerprint)"
        rows.append(("data", f"{data.path or 'unknown'}{fp}", None))
    study = lineage.study
    if study is not None:
        best = ""
        if study.best_value is not None:
            best = f", best {study.objective or 'value'}={metric_value(study.best_value, digits=6)}"
        trials = f"{study.trials_run} trials" if study.trials_run is not None else "trials unknown"
        key = f" · key {study.key_hash[:16]}" if study.key_hash else ""
        rows.append(("study", f"{study.name} ({trials}{best}){key} in {study.storage}", study.mlflow_run_id))
    trial = lineage.best_trial
    if trial is not None:
        params = ", ".join(f"{k}={metric_value(v)}" for k, v in trial.params.items())
        value = f" value {metric_value(trial.value, digits=6)}" if trial.value is not None else ""
        key = f" · key {trial.key_hash[:16]}" if trial.key_hash else ""
        rows.append(("best trial", f"#{trial.number}{value}: {params}{key}", trial.mlflow_run_id))
    run = lineage.final_run
    if run is not None:
        rows.append(("run", run.run_name or "unknown", run.mlflow_run_id))
        rows.append(("config hash", run.config_hash or "unknown", None))
        code = code_version(commit=run.git_commit, dirty=run.git_dirty, nbexec_version=run.nbexec_version,
                            torch_version=run.torch_version)
        rows.append(("code", code, None))
        if run.hardware:
            rows.append(("hardware", run.hardware, None))
    ckpt = lineage.checkpoint
    if ckpt is not None:
        rows.append(("checkpoint", f"{ckpt.path}{_checkpoint_detail(ckpt.bytes, ckpt.sha256)}", None))
    backup = lineage.backup
    if backup is not None:
        rows.append(("backup", f"{backup.location} (verified {backup.verified_at or 'never'})", None))
    else:
        rows.append(("backup", "none", None))
    rows += [("missing", item, None) for item in lineage.missing]
    return rows


def code_version(
    *, commit: str | None, dirty: bool | None = None, nbexec_version: str | None = None,
    torch_version: str | None = None,
) -> str:
    """``git 1a2b3c4d5e6f (uncommitted changes) · nbexec 0.1.0 · torch 2.13.0`` (the versions when known)."""
    parts = [f"git {commit[:12]}" + (" (uncommitted changes)" if dirty else "") if commit else "not in a git repository"]
    if nbexec_version:
        parts.append(f"nbexec {nbexec_version}")
    if torch_version:
        parts.append(f"torch {torch_version}")
    return " · ".join(parts)


def _checkpoint_detail(size: int | None, sha256: str | None) -> str:
    """`` (1,234 bytes, sha256 5555...)``; nothing when neither is known (a run's summary does not hash)."""
    if size is None and not sha256:
        return ""
    text = f"{size:,} bytes" if size is not None else "size unknown"
    return f" ({text}, sha256 {sha256[:16]})" if sha256 else f" ({text})"


def render_lineage_text(lineage: Lineage) -> str:
    """The table as aligned text; a row's MLflow run follows its value."""
    rows = lineage_rows(lineage)
    width = max(len(what) for what, _, _ in rows)
    return "\n".join(
        f"{what.ljust(width)}  {value}" + (f" [MLflow run {run_id}]" if run_id else "") for what, value, run_id in rows
    )


def render_lineage_table_html(lineage: Lineage, *, tracking_url: str | None = None) -> str:
    """The rows as a two-column table (values escaped); run ids link to ``tracking_url``'s pages when given."""
    experiments = _experiments(lineage)
    rows = []
    for what, value, run_id in lineage_rows(lineage):
        cell = markup.esc(value)
        if run_id:
            ref = f"<code>{markup.esc(run_id)}</code>"
            if tracking_url:
                href = run_url(tracking_url, run_id, experiments.get(run_id))
                ref = f'<a href="{markup.esc(href)}" target="_blank" rel="noopener">{ref}</a>'
            cell += f"<br>MLflow run {ref}"
        if what == "missing":
            cell = f'<span style="color:{markup.STATUS_COLOURS["KILLED"]}">{cell}</span>'
        rows.append((markup.esc(what), cell))
    return markup.table(rows)


def render_lineage_html(lineage: Lineage, *, tracking_url: str | None = None, open_: bool = True) -> str:
    """The table in a ``lineage`` section, as a notebook shows a record (open) or a run's summary (collapsed)."""
    return markup.details("lineage", render_lineage_table_html(lineage, tracking_url=tracking_url), open_=open_)


def _experiments(lineage: Lineage) -> dict[str, str]:
    """The experiment of each run id the record names (a run's page is under its experiment)."""
    out: dict[str, str] = {}
    study, trial, run = lineage.study, lineage.best_trial, lineage.final_run
    if study is not None and study.mlflow_experiment_id:
        for run_id in (study.mlflow_run_id, trial.mlflow_run_id if trial else None):
            if run_id:
                out[run_id] = study.mlflow_experiment_id
    if run is not None and run.mlflow_run_id and run.mlflow_experiment_id:
        out[run.mlflow_run_id] = run.mlflow_experiment_id
    return out
