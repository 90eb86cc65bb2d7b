"""The lineage table: rows from a record, as text (``nbexec lineage PATH``) and, in the notebook layer, HTML.

The rows extend the run summary's (config hash, data, code, run, checkpoint)
with the study, the best trial and the backup. Each row may name an MLflow
run; the HTML view makes it a link when a tracking server URL is known.
"""

from __future__ import annotations

import os

from nbexec.lineage.record import Lineage

Row = tuple[str, str, "str | None"]  # (what, value, MLflow run id shown as a link)


def lineage_rows(lineage: Lineage) -> list[tuple[str, str, str | None]]:
    """The table's rows, in lineage order: data -> study -> best trial -> run -> checkpoint -> backup."""
    rows: list[tuple[str, str, str | None]] = []
    data = lineage.data
    if data is not None:
        fp = f" (fingerprint {data.fingerprint[:16]})" if data.fingerprint else " (no fingerprint)"
        rows.append(("data", f"{data.path or 'unknown'}{fp}", None))
    study = lineage.study
    if study is not None:
        best = ""
        if study.best_value is not None:
            best = f", best {study.objective or 'value'}={study.best_value:.6g}"
        trials = f"{study.trials_run} trials" if study.trials_run is not None else "trials unknown"
        key = f" · key {study.key_hash[:16]}" if study.key_hash else ""
        rows.append(("study", f"{study.name} ({trials}{best}){key} in {study.storage}", study.mlflow_run_id))
    trial = lineage.best_trial
    if trial is not None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        value = f" value {trial.value:.6g}" if trial.value is not None else ""
        key = f" · key {trial.key_hash[:16]}" if trial.key_hash else ""
        rows.append(("best trial", f"#{trial.number}{value}: {params}{key}", trial.mlflow_run_id))
    run = lineage.final_run
    if run is not None:
        rows.append(("run", run.run_name or "unknown", run.mlflow_run_id))
        rows.append(("config hash", run.config_hash or "unknown", None))
        rows.append(("code", _code(run.git_commit, run.git_dirty, run.nbexec_version, run.torch_version), None))
        if run.hardware:
            rows.append(("hardware", run.hardware, None))
    ckpt = lineage.checkpoint
    if ckpt is not None:
        size = f"{ckpt.bytes:,} bytes" if ckpt.bytes is not None else "size unknown"
        sha = f", sha256 {ckpt.sha256[:16]}" if ckpt.sha256 else ""
        rows.append(("checkpoint", f"{ckpt.path} ({size}{sha})", None))
    backup = lineage.backup
    if backup is not None:
        rows.append(("backup", f"{backup.location} (verified {backup.verified_at or 'never'})", None))
    else:
        rows.append(("backup", "none", None))
    rows += [("missing", item, None) for item in lineage.missing]
    return rows


def render_lineage_text(lineage: Lineage) -> str:
    """The table as aligned text; run ids follow their row."""
    rows = lineage_rows(lineage)
    width = max(len(what) for what, _, _ in rows)
    lines = []
    for what, value, run_id in rows:
        suffix = f" [MLflow run {run_id}]" if run_id else ""
        lines.append(f"{what.ljust(width)}  {value}{suffix}")
    return "\n".join(lines)


def known_tracking_url() -> str | None:
    """The tracking server's URL when runs live on one (the current setup's, or ``$MLFLOW_TRACKING_URI``)."""
    from nbexec.tracking.store import current_setup

    setup = current_setup()
    uri = setup.tracking_uri if setup is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(tracking_url: str, run_id: str, experiment_id: str | None = None) -> str:
    """A run's page on an MLflow server."""
    if experiment_id:
        return f"{tracking_url}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{tracking_url}/#/runs/{run_id}"


def _code(commit: str | None, dirty: bool | None, nbexec_version: str | None, torch_version: str | None) -> str:
    parts = []
    if commit:
        parts.append(f"git {commit[:12]}" + (" (uncommitted changes)" if dirty else ""))
    else:
        parts.append("not in a git repository")
    if nbexec_version:
        parts.append(f"nbexec {nbexec_version}")
    if torch_version:
        parts.append(f"torch {torch_version}")
    return " · ".join(parts)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
