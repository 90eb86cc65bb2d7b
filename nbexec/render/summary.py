"""The end-of-run summary: status, duration, metrics, MLflow run, checkpoint, backup, lineage, failure.

:class:`RunSummary` is plain data built from a :class:`~nbexec.result.TrainingResult`
(and what else is known: the MLflow run, the data, the git commit); the
``render_*`` functions turn it into HTML (a notebook) or text (the CLI, a
terminal IPython, nbval) without a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbexec.errors import RootCause
from nbexec.lineage.record import BackupLineage, CheckpointLineage, DataLineage, Lineage, RunLineage, git_state
from nbexec.render import formats, markup
from nbexec.render.lineage import lineage_rows, render_lineage_html
from nbexec.render.links import server_url
from nbexec.result import RunStatus, TrainingResult
from nbexec.version import __version__

TextLine = tuple[str, bool]  # a line of the text summary, and whether it reports a problem (stderr in a terminal)


@dataclass(frozen=True)
class RunSummary:
    """What a person wants to know once a run is over.

    Attributes:
        mlflow_where: the run's URL, or the ``mlflow ui`` command for its store.
        lineage: ``(what, value)`` rows of :func:`~nbexec.render.lineage.lineage_rows`,
            a row's MLflow run in its value.
        lineage_record: the record those rows come from (the HTML table links its runs).
        tracking_url: the tracking server's URL, for those links (None: a local store).
        log_paths: ``(name, path)`` of every log file.
        log_tail: the failing rank's last log lines, shown when it left no traceback.
        show_traceback: include the failing rank's traceback (off when the cell's
            error output or the terminal shows it already).
        untracked: why a job that should have been tracked has no MLflow run.
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
    mlflow_experiment_id: str | None = None
    mlflow_where: str | None = None
    lineage: tuple[tuple[str, str], ...] = ()
    root_cause: RootCause | None = None
    log_paths: tuple[tuple[str, str], ...] = ()
    log_tail: tuple[str, ...] = ()
    show_traceback: bool = True
    lineage_record: Lineage | None = None
    tracking_url: str | None = None
    backup: Mapping[str, Any] | None = None
    untracked: str | None = None
    last_step: int | None = None
    total_steps: int | None = None

    @classmethod
    def from_result(
        cls,
        result: TrainingResult,
        *,
        tracking: Any = None,
        data: str | None = None,
        git: Mapping[str, str] | None = None,
        show_traceback: bool = True,
        log_tail: Sequence[str] = (),
        lineage: Lineage | None = None,
        tracking_url: str | None = None,
    ) -> RunSummary:
        """Build it from a job's result.

        Args:
            result: the final result.
            tracking: the run's ``TrackedRun`` (``run.tracking``), if it was tracked.
            data: the dataset the trainer was given (``data.path``); the one it says it used
                (``result.data_path``) wins.
            git: where the code was, as :func:`nbexec.tracking.tags.git_tags` says.
            show_traceback: see the class.
            log_tail: see the class (``TrainingFailed.log_tail``).
            lineage: the run's full lineage record, when it has one (HPO final runs);
                otherwise the rows are what the run itself knows.
            tracking_url: the tracking server's URL (default: the ``tracking`` run's server).
        """
        run_id = result.mlflow_run_id or getattr(tracking, "run_id", None)
        setup = getattr(tracking, "setup", None)
        where = experiment = experiment_id = None
        if tracking is not None and run_id:
            where = _where(tracking)
            experiment = getattr(setup, "experiment_name", None)
            experiment_id = getattr(setup, "experiment_id", None)
        data = result.data_path or data
        record = lineage if lineage is not None else _run_lineage(result, run_id, experiment_id, data, git)
        return cls(
            run_name=result.run_name,
            status=result.status,
            duration_s=result.duration_s,
            nproc=result.nproc,
            backend=result.backend,
            run_dir=str(result.run_dir),
            metrics=dict(result.metrics),
            checkpoint=str(result.checkpoint) if result.checkpoint else None,
            mlflow_run_id=run_id,
            mlflow_experiment=experiment,
            mlflow_experiment_id=experiment_id,
            mlflow_where=where,
            lineage=tuple((what, value + (f" (MLflow run {rid})" if rid else "")) for what, value, rid in lineage_rows(record)),
            root_cause=result.root_cause,
            log_paths=tuple((name, str(path)) for name, path in result.log_paths.items()),
            log_tail=tuple(log_tail),
            show_traceback=show_traceback,
            lineage_record=record,
            tracking_url=tracking_url or server_url(getattr(setup, "tracking_uri", None)),
            backup=result.backup,
            untracked=result.untracked_reason,
            last_step=result.last_step,
            total_steps=result.total_steps,
        )


def _where(tracking: Any) -> str:
    """The run's URL on a tracking server, else the ``mlflow ui`` command for its store."""
    where = str(tracking.where())
    if where.startswith(("http://", "https://")):
        return where
    return str(getattr(getattr(tracking, "setup", None), "ui_hint", "") or where)


def _run_lineage(
    result: TrainingResult, run_id: str | None, experiment_id: str | None, data: str | None,
    git: Mapping[str, str] | None,
) -> Lineage:
    """What a run knows of its own lineage at its end (no study; nothing hashed: a summary must be quick)."""
    git_commit, git_dirty = git_state(git or {})
    backup = result.backup
    verified = backup is not None and bool(backup.get("verified"))
    return Lineage(
        data=DataLineage(path=data) if data else None,
        final_run=RunLineage(
            mlflow_run_id=run_id, mlflow_experiment_id=experiment_id, run_name=result.run_name,
            run_dir=str(result.run_dir), config_hash=result.config_hash, git_commit=git_commit, git_dirty=git_dirty,
            nbexec_version=__version__,
        ),
        checkpoint=CheckpointLineage(path=str(result.checkpoint)) if result.checkpoint else None,
        backup=BackupLineage(location=backup.get("location"), verified_at=backup.get("verified_at"),
                             manifest=backup.get("manifest")) if backup is not None and verified else None,
    )


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


def _headline(s: RunSummary) -> str:
    return f"{s.run_name} {s.status.value}{_where_stopped(s)} in {formats.duration(s.duration_s)} ({s.nproc} x {s.backend})"


def _where_stopped(s: RunSummary) -> str:
    """`` at step 420/1000`` for a run that did not finish (where to resume, what was lost); empty otherwise."""
    where = formats.stopped_at(s.last_step, s.total_steps)
    return f" {where}" if where and s.status is not RunStatus.FINISHED else ""


# --- HTML ------------------------------------------------------------------------------


def render_summary_html(s: RunSummary) -> str:
    """The summary as HTML (every value escaped)."""
    parts = [
        f"<div><b>{markup.esc(s.run_name)}</b> {markup.badge(s.status)}{markup.esc(_where_stopped(s))} "
        f'<span style="{markup.MUTED}">in {markup.esc(formats.duration(s.duration_s))} · '
        f"{s.nproc} × {markup.esc(s.backend)}</span></div>"
    ]
    if s.root_cause is not None:
        parts.append(_failure_html(s))
    if s.metrics:
        parts.append(markup.row_table({k: formats.metric_value(v) for k, v in s.metrics.items()},
                                      css_class="nbexec-metrics"))
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
        parts.append(render_lineage_html(s.lineage_record, tracking_url=s.tracking_url, open_=False))
    elif s.lineage:
        lineage = [(markup.esc(k), markup.esc(v)) for k, v in s.lineage]
        parts.append(markup.details("lineage", markup.table(lineage)))
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
    elif s.show_traceback and s.log_tail:
        out += markup.details("last lines of its log", markup.pre("\n".join(s.log_tail), max_height_em=30))
    return out


# --- text -----------------------------------------------------------------------------


def render_summary_text(s: RunSummary, *, lineage: bool = True) -> str:
    """The summary as plain text (a terminal, a text-only front end, nbval); see :func:`summary_text_lines`."""
    return "\n".join(text for text, _ in summary_text_lines(s, lineage=lineage))


def summary_text_lines(s: RunSummary, *, lineage: bool = True) -> list[TextLine]:
    """The text summary, line by line, each with whether it reports a problem.

    The problems of a run that finished (NOT tracked, a failed backup) are the
    lines a terminal prints on stderr. A failure comes last: the root cause
    once, where it happened, the traceback unless shown already, the logs.

    Args:
        lineage: include the lineage row (the CLI leaves it to ``nbexec lineage``).
    """
    lines: list[TextLine] = [(f"nbexec: {_headline(s)}", False)]
    lines.append((f"  metrics:    {formats.metrics_line(s.metrics) or 'none reported'}", False))
    if s.mlflow_run_id:
        lines.append((f"  mlflow:     {s.mlflow_run_id}{_experiment_text(s)}", False))
        if s.mlflow_where:
            lines.append((f"  open:       {s.mlflow_where}", False))
    elif s.untracked:
        lines.append((f"  mlflow:     NOT tracked: {s.untracked}", True))
    else:
        lines.append(("  mlflow:     not tracked", False))
    lines.append((f"  checkpoint: {s.checkpoint or 'none written'}", False))
    lines.append((f"  run dir:    {s.run_dir}", False))
    backup = backup_line(s.backup)
    if backup is not None:
        lines.append((f"  backup:     {backup[0]}", not backup[1]))
    if lineage and s.lineage:
        lines.append(("  lineage:    " + " | ".join(f"{k}: {v}" for k, v in s.lineage), False))
    if s.root_cause is not None:
        lines += [(ln, False) for ln in failure_text_lines(s.root_cause, show_traceback=s.show_traceback,
                                                            log_tail=s.log_tail)]
    if s.log_paths:
        lines.append((logs_text_line(s.log_paths, failed=s.root_cause is not None), False))
    return lines


def _experiment_text(s: RunSummary) -> str:
    """`` (experiment ner, id 3)``; what is known of it."""
    known = [f"experiment {s.mlflow_experiment}"] if s.mlflow_experiment else []
    if s.mlflow_experiment_id:
        known.append(f"id {s.mlflow_experiment_id}" if known else f"experiment id {s.mlflow_experiment_id}")
    return f" ({', '.join(known)})" if known else ""


def failure_text_lines(rc: RootCause, *, show_traceback: bool = True, log_tail: Sequence[str] = ()) -> list[str]:
    """The root cause, where it happened, and its traceback (or, without one, the last lines of the log)."""
    lines = [f"  root cause: {rc.headline()}"]
    if rc.where:
        lines.append(f"  at:         {rc.where}")
    if show_traceback and rc.traceback:
        lines += ["    " + ln for ln in rc.traceback.rstrip().splitlines()]
    elif show_traceback and log_tail:
        lines.append("  last lines of its log:")
        lines += ["    " + ln for ln in log_tail]
    return lines


def logs_text_line(log_paths: Sequence[tuple[str, str]], *, failed: bool = False) -> str:
    """``  logs:       runs/x/logs (rank0.log, rank1.log, launcher.log)``; each path when they are not in one folder.

    A failure also says where torchrun's own report of it is.
    """
    paths = [Path(p) for _, p in log_paths]
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        names = ", ".join(p.name for p in paths)
        note = "; torchrun's own report in launcher.log" if failed and any(n == "launcher" for n, _ in log_paths) else ""
        text = f"{folders.pop()} ({names}{note})"
    else:
        text = ", ".join(f"{name}: {path}" for name, path in log_paths)
    return f"  logs:       {text}"
