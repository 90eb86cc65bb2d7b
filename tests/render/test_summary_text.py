"""The text summary: what the CLI, a terminal IPython and nbval show at the end of a run, from one renderer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from nbexec.cli import EXIT_BACKUP, failure_report, print_summary
from nbexec.errors import RootCause, TrainingFailed
from nbexec.render import formats
from nbexec.render.summary import RunSummary, render_summary_text, summary_text_lines
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.sinks import TerminalSink

LOGS = Path("/runs/r1/logs")
UI = "mlflow ui --backend-store-uri sqlite:////p/mlflow.db"
TRACEBACK = 'Traceback (most recent call last):\n  File "t.py", line 3, in <module>\nValueError: boom\n'


def result(status: RunStatus = RunStatus.FINISHED, **changes: Any) -> TrainingResult:
    base: dict[str, Any] = dict(
        run_name="r1", run_dir=Path("/runs/r1"), status=status, exit_code=0 if status is RunStatus.FINISHED else 1,
        started_at=100.0, ended_at=104.25, nproc=2, backend="gloo", config_hash="0123456789abcdef",
        command=("python",), metrics={"loss": 0.123456, "step": 12345}, checkpoint=Path("/runs/r1/checkpoint"),
        log_paths={"rank0": LOGS / "rank0.log", "rank1": LOGS / "rank1.log", "launcher": LOGS / "launcher.log"},
    )
    base.update(changes)
    return TrainingResult(**base)


class Setup:  # what the summary reads of a TrackingSetup
    experiment_name = "nbexec"
    experiment_id = "3"
    ui_hint = UI
    tracking_uri = "sqlite:////p/mlflow.db"


class Tracked:  # ... and of a TrackedRun
    run_id = "abc123"
    setup = Setup()

    @staticmethod
    def where() -> str:
        return f"run abc123 (experiment id 3); open with: {UI}"


def failed(rc: RootCause, **changes: Any) -> tuple[TrainingFailed, TrainingResult]:
    res = result(RunStatus.FAILED, root_cause=rc, checkpoint=None, metrics={}, **changes)
    return TrainingFailed(run_name="r1", root_cause=rc, log_paths=dict(res.log_paths), log_tail=["last words"]), res


def test_the_cli_prints_a_finished_run_with_the_text_renderer(capsys: pytest.CaptureFixture[str]) -> None:
    res = result(mlflow_run_id="abc123")
    assert print_summary(res, Tracked()) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "nbexec: r1 FINISHED in 4.2 s (2 x gloo)",
        "  metrics:    loss=0.1235 step=12345",
        "  mlflow:     abc123 (experiment nbexec, id 3)",
        f"  open:       {UI}",
        "  checkpoint: /runs/r1/checkpoint",
        "  run dir:    /runs/r1",
        "  logs:       /runs/r1/logs (rank0.log, rank1.log, launcher.log)",
    ]
    # the notebook's text view is the same, with the lineage row the CLI leaves to `nbexec lineage`
    full = render_summary_text(RunSummary.from_result(res, tracking=Tracked())).splitlines()
    assert [ln for ln in full if not ln.startswith("  lineage:    ")] == out.splitlines()


def test_a_finished_runs_problems_go_to_stderr_and_a_failed_backup_sets_the_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    res = result(tracking={"state": "untracked", "reason": "the store did not answer in 3 s"},
                 backup={"error": "disk full", "location": "/backups/r1"})
    assert print_summary(res, None) == EXIT_BACKUP
    out, err = capsys.readouterr()
    assert out.startswith("nbexec: r1 FINISHED in 4.2 s") and "NOT tracked" not in out and "backup" not in out
    assert err.splitlines() == [
        "  mlflow:     NOT tracked: the store did not answer in 3 s",
        "  backup:     FAILED (disk full); the checkpoint is still in the run dir",
    ]
    problems = [text for text, problem in summary_text_lines(RunSummary.from_result(res)) if problem]
    assert problems == err.splitlines()


def test_a_failure_says_the_root_cause_once_at_the_end_with_where_and_the_logs() -> None:
    rc = RootCause(rank=1, exit_code=1, exc_type="ValueError", message="boom", traceback=TRACEBACK, where="t.py:3")
    err, res = failed(rc)

    streamed = failure_report(err, res, traceback_shown=True).splitlines()
    assert streamed[0] == "nbexec: r1 FAILED in 4.2 s (2 x gloo)"
    assert streamed[-3:] == [
        "  root cause: rank 1 failed (exit code 1): ValueError: boom",
        "  at:         t.py:3",
        "  logs:       /runs/r1/logs (rank0.log, rank1.log, launcher.log; torchrun's own report in launcher.log)",
    ]
    assert sum("root cause:" in ln for ln in streamed) == 1
    assert "Traceback" not in "\n".join(streamed) and "last words" not in "\n".join(streamed)

    quiet = failure_report(err, res, traceback_shown=False).splitlines()  # --quiet: the traceback was not shown
    assert "    Traceback (most recent call last):" in quiet and "    ValueError: boom" in quiet
    assert quiet.index("    ValueError: boom") > quiet.index("  at:         t.py:3")


def test_a_failure_without_a_traceback_shows_the_last_lines_of_its_log() -> None:
    err, res = failed(RootCause(rank=0, exit_code=-9, message="killed by SIGKILL"))
    report = failure_report(err, res, traceback_shown=False).splitlines()
    assert report[-3:-1] == ["  last lines of its log:", "    last words"]
    assert "last words" not in failure_report(err, res, traceback_shown=True)


def test_a_failure_without_a_result_still_says_the_cause_and_the_logs() -> None:
    err, _ = failed(RootCause(rank=1, exit_code=1, exc_type="ValueError", message="boom", where="t.py:3"))
    assert failure_report(err, None, traceback_shown=True).splitlines() == [
        "nbexec: r1 FAILED",
        "  root cause: rank 1 failed (exit code 1): ValueError: boom",
        "  at:         t.py:3",
        "  logs:       /runs/r1/logs (rank0.log, rank1.log, launcher.log; torchrun's own report in launcher.log)",
    ]


def test_logs_in_several_folders_are_listed_whole() -> None:
    res = result(log_paths={"rank0": Path("/a/rank0.log"), "rank1": Path("/b/rank1.log")})
    text = render_summary_text(RunSummary.from_result(res))
    assert text.splitlines()[-1] == "  logs:       rank0: /a/rank0.log, rank1: /b/rank1.log"


def test_one_metric_formatter_for_every_view() -> None:
    metrics = {"loss": 0.123456, "step": 12345, "acc": float("nan")}
    line = formats.metrics_line(metrics)
    assert line == "loss=0.1235 step=12345 acc=nan"  # an int stays whole (not 1.234e+04)
    assert repr(result(metrics=metrics)) == f"TrainingResult('r1', FINISHED, 4.2s, 2xgloo, {line})"
    out = io.StringIO()
    TerminalSink(stream=out, live=False).on_events([{"kind": "metrics", "step": 5, "metrics": {**metrics, "note": "x"}}])
    assert out.getvalue() == f"[nbexec] step 5 {line}\n"  # a value that is not a number is left out
    assert f"  metrics:    {line}" in render_summary_text(RunSummary.from_result(result(metrics=metrics)))
