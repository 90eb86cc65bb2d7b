"""The end-of-run summary: status, duration, metrics, MLflow run, checkpoint, lineage, failure.

:class:`RunSummary` is plain data built from a :class:`~nbexec.result.TrainingResult`
(and what else is known: the MLflow run, the code version); the ``render_*``
functions turn it into HTML or text without a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbexec.errors import RootCause
from nbexec.render import formats, markup
from nbexec.result import RunStatus, TrainingResult


@dataclass(frozen=True)
class RunSummary:
    """What a person wants to know once a run is over.

    Attributes:
        mlflow_where: the run's URL, or a sentence with the ``mlflow ui`` command.
        lineage: ``(what, value)`` rows: config hash, data, code, run, checkpoint.
        log_paths: ``(name, path)`` of every log file.
        show_traceback: include the failing rank's traceback (off when the cell's
            error output shows it already).
    """

    run_name: str
    status: RunStatus
    duration_s: float
    nproc: int
    backend: str
    run_dir: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    mlflow_run_id: str | None = None
    mlflow_experiment: str | None = None
    mlflow_where: str | None = None
    lineage: tuple[tuple[str, str], ...] = ()
    root_cause: RootCause | None = None
    log_paths: tuple[tuple[str, str], ...] = ()
    show_traceback: bool = True
    lineage_record: Any = None  # a nbexec.lineage.Lineage: the full table (study, trial, backup), run ids linked
    backup: Mapping[str, Any] | None = None
    untracked: str | None = None  # why a job that should have been tracked has no MLflow run

    @classmethod
    def from_result(
        cls,
        result: TrainingResult,
        *,
        tracking: Any = None,
        data: str | None = None,
        code_version: str | None = None,
        show_traceback: bool = True,
        lineage: Any = None,
    ) -> RunSummary:
        """Build it from a job's result.

        Args:
            result: the final result.
            tracking: the run's ``TrackedRun`` (``run.tracking``), if it was tracked.
            data: the dataset the trainer was given (``data.path``).
            code_version: e.g. the git commit the code was at.
            show_traceback: see the class.
            lineage: the run's :class:`nbexec.lineage.Lineage`, when it has one (HPO final runs):
                its rows replace the basic ones.
        """
        run_id = result.mlflow_run_id or getattr(tracking, "run_id", None)
        where = experiment = None
        if tracking is not None and run_id:
            where = _where(tracking)
            experiment = getattr(getattr(tracking, "setup", None), "experiment_name", None)
        checkpoint = str(result.checkpoint) if result.checkpoint else None
        rows = lineage_rows(
            config_hash=result.config_hash,
            data=data,
            code_version=code_version,
            run=result.run_name + (f" (MLflow run {run_id})" if run_id else ""),
            checkpoint=checkpoint,
            backup=_backup_lineage(result.backup),
        )
        if lineage is not None:
            rows = tuple((what, value + (f" (MLflow run {rid})" if rid else "")) for what, value, rid in lineage.rows())
        return cls(
            run_name=result.run_name,
            status=result.status,
            duration_s=result.duration_s,
            nproc=result.nproc,
            backend=result.backend,
            run_dir=str(result.run_dir),
            metrics=dict(result.metrics),
            checkpoint=checkpoint,
            mlflow_run_id=run_id,
            mlflow_experiment=experiment,
            mlflow_where=where,
            lineage=rows,
            root_cause=result.root_cause,
            log_paths=tuple((name, str(path)) for name, path in result.log_paths.items()),
            show_traceback=show_traceback,
            lineage_record=lineage,
            backup=result.backup,
            untracked=result.untracked_reason,
        )


def _where(tracking: Any) -> str:
    """The run's URL on a tracking server, else the ``mlflow ui`` command for its store."""
    where = str(tracking.where())
    if where.startswith(("http://", "https://")):
        return where
    return str(getattr(getattr(tracking, "setup", None), "ui_hint", "") or where)


def lineage_rows(
    *,
    config_hash: str,
    data: str | None,
    code_version: str | None,
    run: str,
    checkpoint: str | None,
    backup: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """The lineage known at the end of a run, as ``(what, value)`` rows."""
    rows = (
        ("config hash", config_hash),
        ("data", data or "not given (the trainer's default)"),
        ("code", code_version or "unknown (not in a git repository)"),
        ("run", run),
        ("checkpoint", checkpoint or "none written"),
    )
    return (*rows, ("backup", backup)) if backup else rows


def _backup_lineage(backup: Mapping[str, Any] | None) -> str | None:
    """The lineage's backup row: location and verification time of a verified backup."""
    if not backup or not backup.get("verified"):
        return None
    return f"{backup.get('location')} (verified {backup.get('verified_at')})"


def backup_line(backup: Mapping[str, Any] | None) -> tuple[str, bool] | None:
    """``(text, ok)`` describing a run's backup, None when backups were off."""
    if not backup:
        return None
    if backup.get("error"):
        return f"FAILED ({backup['error']}); the checkpoint is still in the run dir", False
    if backup.get("skipped"):
        return str(backup["skipped"]), True
    mb = float(backup.get("bytes_copied") or 0) / 1e6
    state = f"verified {backup.get('verified_at')}" if backup.get("verified") else "NOT verified"
    return (
        f"{backup.get('location')} ({backup.get('files_copied')} copied, {backup.get('files_skipped')} unchanged, "
        f"{mb:.1f} MB; {state})",
        bool(backup.get("verified")),
    )


def code_version(git: Mapping[str, str], nbexec_version: str) -> str:
    """``git 1a2b3c4d5e6f (uncommitted changes) · nbexec 0.1.0`` from :func:`nbexec.tracking.tags.git_tags`."""
    commit = git.get("nbexec.git_commit")
    if not commit:
        return f"nbexec {nbexec_version} (not in a git repository)"
    dirty = " (uncommitted changes)" if git.get("nbexec.git_dirty") == "true" else ""
    return f"git {commit[:12]}{dirty} · nbexec {nbexec_version}"


def _headline(s: RunSummary) -> str:
    return f"{s.run_name} {s.status.value} in {formats.duration(s.duration_s)} ({s.nproc} x {s.backend})"


def render_summary_html(s: RunSummary) -> str:
    """The summary as HTML (every value escaped)."""
    parts = [
        f"<div><b>{markup.esc(s.run_name)}</b> {markup.badge(s.status)} "
        f'<span style="{markup.MUTED}">in {markup.esc(formats.duration(s.duration_s))} · '
        f"{s.nproc} × {markup.esc(s.backend)}</span></div>"
    ]
    if s.root_cause is not None:
        parts.append(_failure_html(s))
    if s.metrics:
        parts.append(markup.row_table({k: formats.metric_value(v) for k, v in s.metrics.items()}))
    rows = []
    if s.mlflow_run_id:
        exp = f" in experiment <b>{markup.esc(s.mlflow_experiment)}</b>" if s.mlflow_experiment else ""
        where = f"<br>{markup.link_or_code(s.mlflow_where)}" if s.mlflow_where else ""
        rows.append(("MLflow run", f"<code>{markup.esc(s.mlflow_run_id)}</code>{exp}{where}"))
    elif s.untracked:
        colour = markup.status_colour(RunStatus.FAILED)
        rows.append(("MLflow run", f'<span style="color:{colour}">NOT tracked: {markup.esc(s.untracked)}</span>'))
    else:
        rows.append(("MLflow run", "not tracked"))
    rows.append(("checkpoint", f"<code>{markup.esc(s.checkpoint)}</code>" if s.checkpoint else "none written"))
    rows.append(("run dir", f"<code>{markup.esc(s.run_dir)}</code>"))
    backup = backup_line(s.backup)
    if backup is not None:
        text, ok = backup
        colour = "inherit" if ok else markup.status_colour(RunStatus.FAILED)
        rows.append(("backup", f'<span style="color:{colour}">{markup.esc(text)}</span>'))
    parts.append(markup.table(rows))
    if s.lineage_record is not None:
        from nbexec.render.lineage import render_lineage_html
        from nbexec.tracking.store import known_server_url

        parts.append(render_lineage_html(s.lineage_record, tracking_url=known_server_url()))
    else:
        lineage = [(markup.esc(k), markup.esc(v)) for k, v in s.lineage]
        parts.append(markup.details("lineage", markup.table(lineage), open_=True))
    if s.log_paths:
        logs = "<br>".join(f"{markup.esc(n)}: <code>{markup.esc(p)}</code>" for n, p in s.log_paths)
        parts.append(markup.details("log files", f"<div>{logs}</div>"))
    return "".join(parts)


def _failure_html(s: RunSummary) -> str:
    rc = s.root_cause
    assert rc is not None
    colour = markup.status_colour(RunStatus.FAILED)
    out = f'<div style="color:{colour};font-weight:600;margin:4px 0">{markup.esc(rc.headline())}</div>'
    if rc.where:
        out += f'<div style="{markup.MUTED}">at <code>{markup.esc(rc.where)}</code></div>'
    if s.show_traceback and rc.traceback:
        where = f"rank {rc.rank}" if rc.rank is not None else "the launcher"
        out += markup.details(f"traceback from {where}", markup.pre(rc.traceback.rstrip(), max_height_em=30))
    return out


def render_summary_text(s: RunSummary) -> str:
    """The summary as plain text (the fallback a terminal or nbval sees)."""
    lines = [f"nbexec: {_headline(s)}"]
    if s.root_cause is not None:
        lines.append(f"  failure:    {s.root_cause.headline()}")
        if s.root_cause.where:
            lines.append(f"  at:         {s.root_cause.where}")
        if s.show_traceback and s.root_cause.traceback:
            lines += ["    " + ln for ln in s.root_cause.traceback.rstrip().splitlines()]
    lines.append(f"  metrics:    {formats.metrics_line(s.metrics) or 'none reported'}")
    if s.mlflow_run_id:
        exp = f" (experiment {s.mlflow_experiment})" if s.mlflow_experiment else ""
        lines.append(f"  mlflow:     {s.mlflow_run_id}{exp}")
        if s.mlflow_where:
            lines.append(f"  open:       {s.mlflow_where}")
    elif s.untracked:
        lines.append(f"  mlflow:     NOT tracked: {s.untracked}")
    else:
        lines.append("  mlflow:     not tracked")
    lines.append(f"  checkpoint: {s.checkpoint or 'none written'}")
    lines.append(f"  run dir:    {s.run_dir}")
    backup = backup_line(s.backup)
    if backup is not None:
        lines.append(f"  backup:     {backup[0]}")
    lines.append("  lineage:    " + " | ".join(f"{k}: {v}" for k, v in s.lineage))
    if s.log_paths:
        lines.append("  logs:       " + ", ".join(f"{n}: {p}" for n, p in s.log_paths))
    return "\n".join(lines)
