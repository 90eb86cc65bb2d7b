"""The run views as data: HTML escaping, the bounded tail, the summary, rate-limited updates — no kernel."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from nbexec.config import load_config
from nbexec.errors import RootCause, TrainingFailed
from nbexec.hardware import HardwareInfo
from nbexec.notebook.errors import failure_lines, shown_briefly
from nbexec.notebook.live import MAX_RATE, LiveRunView
from nbexec.notebook.tail import LineTail
from nbexec.notebook.throttle import Throttle
from nbexec.plan import LaunchPlan, plan_training
from nbexec.render import formats, markup
from nbexec.render.live import LiveSnapshot, render_html, render_text, rendered
from nbexec.render.summary import RunSummary, render_summary_html, render_summary_text
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.lines import LogLine

EVIL = '<script>alert("x")</script> & <b>bold</b> \'quoted\''


def line(rank: int | None, text: str, stream: str = "stdout") -> LogLine:
    return LogLine(rank, stream, text, 0.0)


def no_raw_markup_from(text: str, html: str) -> None:
    """``text`` appears only escaped in ``html``."""
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert markup.esc(text) in html


def snapshot(**changes: Any) -> LiveSnapshot:
    base: dict[str, Any] = dict(
        run_name="run-1", status=RunStatus.RUNNING, elapsed_s=12.5, nproc=2, backend="gloo",
        command="python -m torch.distributed.run --nproc-per-node 2 -m trainer", run_dir="/runs/run-1",
        log_paths=(("rank0", "/runs/run-1/logs/rank0.log"),),
    )
    base.update(changes)
    return LiveSnapshot(**base)


def result(status: RunStatus = RunStatus.FINISHED, **changes: Any) -> TrainingResult:
    base: dict[str, Any] = dict(
        run_name="run-1", run_dir=Path("/runs/run-1"), status=status, exit_code=0 if status is RunStatus.FINISHED else 1,
        started_at=100.0, ended_at=172.5, nproc=2, backend="gloo", config_hash="0123456789abcdef",
        command=("python", "-m", "torch.distributed.run"), metrics={"loss": 0.123456, "val_f1": 0.5},
        checkpoint=Path("/runs/run-1/checkpoint"),
        log_paths={"rank0": Path("/runs/run-1/logs/rank0.log"), "rank1": Path("/runs/run-1/logs/rank1.log")},
    )
    base.update(changes)
    return TrainingResult(**base)


# --- escaping -------------------------------------------------------------------------


def test_log_text_is_escaped_in_the_live_view() -> None:
    snap = snapshot(lines=(line(0, EVIL), line(0, "err " + EVIL, "stderr")))
    html = render_html(snap)
    no_raw_markup_from("[rank0] " + EVIL, html)
    no_raw_markup_from("[rank0!] err " + EVIL, html)
    # stderr is marked twice: "!" after the rank and the stderr colour
    assert f'<span style="color:{markup.STDERR_COLOUR}">{markup.esc("[rank0!] err " + EVIL)}</span>' in html
    text = render_text(snap)
    assert "[rank0] " + EVIL in text and "[rank0!] err " + EVIL in text


def test_every_other_value_is_escaped_too() -> None:
    snap = snapshot(
        run_name=EVIL, command=f"python {EVIL}", run_dir=f"/runs/{EVIL}",
        metrics={EVIL: 1.0}, progress={"step": EVIL, "total": None}, log_paths=((EVIL, f"/logs/{EVIL}"),),
    )
    html = render_html(snap)
    assert "<script>" not in html and "<b>bold</b>" not in html
    rc = RootCause(rank=1, exit_code=1, exc_type="ValueError", message=EVIL, traceback=f"Traceback\n  {EVIL}")
    s = RunSummary.from_result(result(RunStatus.FAILED, run_name=EVIL, metrics={EVIL: 2.0}, root_cause=rc),
                               data=EVIL, git={"nbexec.git_commit": EVIL})
    html = render_summary_html(s)
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert markup.esc(rc.headline()) in html


def test_only_http_urls_become_links() -> None:
    assert markup.link_or_code("http://127.0.0.1:5000/#/x").startswith('<a href="http://127.0.0.1:5000/#/x"')
    assert "<a" not in markup.link_or_code("javascript:alert(1)")
    assert markup.link_or_code('mlflow ui --backend-store-uri "x"').startswith("<code")


# --- the bounded tail -------------------------------------------------------------------


def test_tail_keeps_the_last_lines_of_the_chosen_ranks_only() -> None:
    tail = LineTail((0,), maxlen=5)
    tail.add([line(0, f"zero {i}") for i in range(100_000)])
    tail.add([line(1, "one"), line(None, "torchrun says a lot"), line(None, "nbexec: a finalizer failed", "stderr")])
    lines, hidden, dropped = tail.snapshot()
    assert [ln.text for ln in lines] == ["zero 99996", "zero 99997", "zero 99998", "zero 99999", "nbexec: a finalizer failed"]
    assert hidden == 100_001 - 5
    assert dropped == 0
    assert tail.label == "rank 0"


def test_all_ranks_include_the_launcher_and_long_lines_are_cut() -> None:
    tail = LineTail(None, maxlen=3, max_chars=100)
    tail.add([line(1, "x" * 1_000_000), line(None, "torchrun"), line(0, "short")])
    lines, _, _ = tail.snapshot()
    assert [ln.rank for ln in lines] == [1, None, 0]
    assert len(lines[0].text) < 200 and "999,900 more characters in the log file" in lines[0].text
    assert tail.label == "all ranks"
    assert LineTail((2, 0)).label == "ranks 0, 2"
    with pytest.raises(ValueError):
        LineTail(maxlen=0)


def test_choosing_another_rank_shows_its_recent_lines_at_once() -> None:
    tail = LineTail((0,), maxlen=3)
    tail.add([line(1, "one early")] + [line(0, f"zero {i}") for i in range(10)] + [line(1, "one late")])
    tail.add([line(None, "torchrun chatter"), line(None, "nbexec: note")])
    assert [ln.text for ln in tail.snapshot()[0]] == ["zero 8", "zero 9", "nbexec: note"]

    tail.select([1])  # a chatty rank 0 did not push rank 1's lines out

    lines, hidden, _ = tail.snapshot()
    assert [ln.text for ln in lines] == ["one early", "one late", "nbexec: note"]
    assert hidden == 0 and tail.label == "rank 1"
    tail.select(None)
    assert [ln.text for ln in tail.snapshot()[0]] == ["one late", "torchrun chatter", "nbexec: note"]
    assert tail.snapshot()[1] == 14 - 3


def test_an_unfinished_line_shows_last_until_its_finished_line_replaces_it() -> None:
    tail = LineTail((0,), maxlen=3)
    tail.add([line(0, f"zero {i}") for i in range(5)])
    bar = LogLine(0, "stderr", "train:  30%|###", 1.0, partial=True)
    assert tail.set_partial([bar, LogLine(1, "stderr", "rank 1's bar", 1.0, partial=True)]) == 1
    lines, hidden, _ = tail.snapshot()
    assert [ln.text for ln in lines] == ["zero 3", "zero 4", "train:  30%|###"] and lines[-1].partial
    assert hidden == 3
    tail.set_partial([LogLine(0, "stderr", "train:  60%|######", 2.0, partial=True)])  # replaces the 30% one
    assert [ln.text for ln in tail.snapshot()[0]][-1] == "train:  60%|######"
    tail.add([line(0, "train: 100%|##########", stream="stderr")])
    assert [ln.text for ln in tail.snapshot()[0]] == ["zero 3", "zero 4", "train: 100%|##########"]
    assert not any(ln.partial for ln in tail.snapshot()[0])


def test_the_view_says_what_it_does_not_show() -> None:
    snap = snapshot(lines=(line(0, "last"),), hidden=12_345, dropped=678)
    for out in (render_html(snap), render_text(snap)):
        assert "12,345 earlier not shown" in out
        assert "678 lines skipped" in out
        assert "/runs/run-1/logs/rank0.log" in out


# --- live view and summary content -----------------------------------------------------------


def test_live_view_shows_command_progress_metrics_and_elapsed_time() -> None:
    snap = snapshot(progress={"step": 50, "total": 200, "epoch": 1}, metrics={"loss": 0.812345})
    html, text = render_html(snap), render_text(snap)
    assert "<details><summary>command</summary>" in html, "the command is collapsed"
    assert "torch.distributed.run" in html
    assert "width:25.0%" in html and "step 50/200 (25%) · epoch 1" in html
    # metrics: a small table (a name over its value), not one long string
    assert 'class="nbexec-metrics"' in html and ">loss</th>" in html and ">0.8123</td>" in html
    assert "loss=0.8123" not in html and "12.5 s" in html
    assert markup.status_colour(RunStatus.RUNNING) in html
    assert "progress: [######..................] step 50/200 (25%) · epoch 1" in text
    assert text.startswith("nbexec: run-1 RUNNING, 12.5 s, 2 x gloo")
    assert "waiting for the first step" in render_text(snapshot())
    quiet = render_text(snapshot(quiet=True, lines=(line(0, "hidden line"),)))
    assert "hidden line" not in quiet


def test_summary_of_a_finished_run() -> None:
    class Tracked:  # what the summary reads of a TrackedRun
        run_id = "abc123"

        class setup:  # noqa: N801
            experiment_name = "ner"
            ui_hint = "mlflow ui --backend-store-uri sqlite:///x/mlflow.db"

        @staticmethod
        def where() -> str:
            return "run abc123 (experiment id 1); open with: mlflow ui --backend-store-uri sqlite:///x/mlflow.db"

    s = RunSummary.from_result(result(mlflow_run_id="abc123"), tracking=Tracked(), data="data/ner",
                               git={"nbexec.git_commit": "f" * 40, "nbexec.git_dirty": "true"})
    text, html = render_summary_text(s), render_summary_html(s)
    assert text.splitlines()[0] == "nbexec: run-1 FINISHED in 1 min 12 s (2 x gloo)"
    assert "metrics:    loss=0.1235 val_f1=0.5" in text
    assert "mlflow:     abc123 (experiment ner)" in text
    assert "open:       mlflow ui --backend-store-uri sqlite:///x/mlflow.db" in text
    assert "checkpoint: /runs/run-1/checkpoint" in text
    # the lineage table's rows (render.lineage), as far as the run itself knows them
    assert ("lineage:    data: data/ner (no fingerprint) | run: run-1 (MLflow run abc123) | config hash: 0123456789abcdef"
            " | code: git ffffffffffff (uncommitted changes) · nbexec 0.1.0 | checkpoint: /runs/run-1/checkpoint"
            " | backup: none") in text
    assert "lineage:" not in render_summary_text(s, lineage=False)
    assert markup.status_colour(RunStatus.FINISHED) in html
    assert "<th" in html and ">val_f1</th>" in html and ">0.1235</td>" in html
    assert "<code" in html and "mlflow ui --backend-store-uri" in html


def test_summary_with_a_tracking_server_links_the_run() -> None:
    class Tracked:
        run_id = "r1"
        setup = None

        @staticmethod
        def where() -> str:
            return "http://127.0.0.1:5000/#/experiments/1/runs/r1"

    s = RunSummary.from_result(result(mlflow_run_id="r1"), tracking=Tracked())
    assert '<a href="http://127.0.0.1:5000/#/experiments/1/runs/r1"' in render_summary_html(s)


def test_summary_of_a_failed_run_and_the_error_lines() -> None:
    rc = RootCause(rank=1, exit_code=1, exc_type="ValueError", message="boom on batch 17",
                   traceback='Traceback (most recent call last):\n  File "t.py", line 3\nValueError: boom on batch 17\n')
    res = result(RunStatus.FAILED, root_cause=rc, checkpoint=None, metrics={})
    shown = RunSummary.from_result(res, show_traceback=True)
    hidden = RunSummary.from_result(res, show_traceback=False)
    text = render_summary_text(shown).splitlines()
    assert "  root cause: rank 1 failed (exit code 1): ValueError: boom on batch 17" in text
    # the failure comes last, where a terminal leaves the eye: then only its traceback and the logs
    assert text.index("  root cause: rank 1 failed (exit code 1): ValueError: boom on batch 17") > text.index(
        "  run dir:    /runs/run-1")
    assert text[-1] == "  logs:       /runs/run-1/logs (rank0.log, rank1.log)"
    assert 'File "t.py", line 3' in render_summary_text(shown)
    assert 'File "t.py"' not in render_summary_text(hidden) and 't.py' not in render_summary_html(hidden)
    assert "<details><summary>traceback from rank 1</summary>" in render_summary_html(shown)
    assert markup.status_colour(RunStatus.FAILED) in render_summary_html(shown)
    assert "checkpoint: none written" in render_summary_text(shown)
    assert "mlflow:     not tracked" in render_summary_text(shown)

    err = TrainingFailed(run_name="run-1", root_cause=rc, log_paths=dict(res.log_paths))
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in failure_lines(err)]
    assert lines[0] == "TrainingFailed: rank 1 failed (exit code 1): ValueError: boom on batch 17 (run run-1)"
    assert lines[1] == "traceback from rank 1:"
    assert lines[-1] == "logs: rank0: /runs/run-1/logs/rank0.log, rank1: /runs/run-1/logs/rank1.log"
    assert shown_briefly(err, lines)._render_traceback_() == lines  # type: ignore[attr-defined]


def test_rendered_bundle_has_html_and_a_text_fallback() -> None:
    obj = rendered(snapshot())
    assert obj._repr_html_().startswith('<div class="nbexec-run"')
    assert repr(obj).startswith("nbexec: run-1 RUNNING")


def test_formats() -> None:
    assert formats.duration(4.24) == "4.2 s"
    assert formats.duration(125) == "2 min 05 s"
    assert formats.duration(3720) == "1 h 02 min"
    assert formats.metric_value(float("nan")) == "nan" and formats.metric_value(3) == "3"
    assert formats.progress_label({"step": 7}) == "step 7"
    read_off_a_bar = {"step": 9, "total": 20, "rate": 2.01, "eta_s": 5.0, "desc": "Epoch 0", "source": "text"}
    assert formats.progress_label(read_off_a_bar) == "Epoch 0: step 9/20 (45%) · 2.01 steps/s · ETA 5.0 s"
    assert formats.progress_fraction({"step": 7, "total": 0}) is None
    assert formats.text_bar(0.5, 4) == "[##..]"


# --- rate limiting -------------------------------------------------------------------------


def test_throttle_allows_one_update_per_interval() -> None:
    now = [100.0]
    throttle = Throttle(0.25, clock=lambda: now[0])
    assert throttle.delay() == 0.0
    throttle.mark()
    assert throttle.delay() == pytest.approx(0.25)
    now[0] += 0.1
    assert throttle.delay() == pytest.approx(0.15)
    now[0] += 0.2
    assert throttle.delay() == 0.0


class FakeRun:
    """The parts of a TrainingRun the view reads."""

    def __init__(self) -> None:
        self.status = RunStatus.RUNNING
        self.started_at = time.time()
        self.progress: dict[str, Any] | None = None
        self.metrics: dict[str, float] = {}
        self.tracking = None


@pytest.fixture
def plan(machine: Callable[..., HardwareInfo], tmp_path: Path) -> LaunchPlan:
    cfg = load_config({"launch": {"nproc": 2}, "tracking": {"enabled": False}, "data": {"path": "data/ner"}})
    return plan_training(cfg, output_dir=tmp_path, run_name="flood", hardware=machine())


def test_a_flood_is_shown_at_most_max_rate_times_a_second_and_the_end_is_always_shown(plan: LaunchPlan) -> None:
    published: list[tuple[float, Mapping[str, str]]] = []
    lock = threading.Lock()

    def publish(bundle: Mapping[str, str]) -> None:
        with lock:
            published.append((time.monotonic(), bundle))

    view = LiveRunView(plan, publish=publish, tail=10)
    view.show()
    run = FakeRun()
    view.on_start(run)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 1.5:  # this thread plays the runner's dispatcher
        view.on_lines([line(0, f"line {n + i} <x>") for i in range(500)])
        n += 500
    flood_end = time.monotonic()
    view.on_end(result(run_name="flood", run_dir=plan.run_dir, metrics={}))

    times = [t for t, _ in published]
    during = [t for t in times[1:-1]]  # between the first display and the summary
    assert len(during) >= 3, "the view updated while the flood went on"
    assert len(during) <= MAX_RATE * (flood_end - start) + 2
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert min(gaps) >= 1 / MAX_RATE - 0.005, gaps
    # bounded: every rendering holds at most the tail, whatever was printed
    for _, bundle in published[1:-1]:
        assert bundle["text/plain"].count("[rank0] line ") <= 10
        assert "&lt;x&gt;" in bundle["text/html"] or "[rank0]" not in bundle["text/plain"]
    assert n >= 10_000
    last = published[-1][1]["text/plain"]
    assert last.startswith("nbexec: flood FINISHED in ")
    assert view.tail.snapshot()[1] == n - 10


# --- the theme, the summary's clutter, the widget's tail ------------------------------------------

HEX = re.compile(r"#[0-9a-fA-F]{3,8}\b")


def colours_outside_theme_variables(html: str) -> list[str]:
    """Colours written in ``html`` other than as the fallback of a ``var(--jp-...)``."""
    without_vars = re.sub(r"var\(--jp-[\w-]+,[^()]*(\([^()]*\))?[^()]*\)", "var()", html)
    return HEX.findall(without_vars) + re.findall(r"background:(?!var\(|transparent)[^;\"]+", without_vars)


def test_every_colour_of_the_views_is_a_jupyterlab_theme_variable() -> None:
    from nbexec.notebook.curves import loss_curve_svg

    resources = {"ranks": {"0": {"cpu_percent": 90.0, "rss_bytes": 4e8}}, "host": {"cpu_percent": 50.0}}
    live = render_html(snapshot(progress={"step": 5, "total": 10}, metrics={"loss": 1.0}, resources=resources,
                                lines=(line(0, "out"), line(0, "err", "stderr"))))
    rc = RootCause(rank=1, exit_code=1, exc_type="ValueError", message="x", traceback="Traceback\nValueError: x")
    failed = render_summary_html(RunSummary.from_result(result(RunStatus.FAILED, root_cause=rc)))
    killed = render_summary_html(RunSummary.from_result(result(RunStatus.KILLED)))
    curve = loss_curve_svg({"loss": [(1.0, 2.0), (2.0, 1.0)]})
    assert curve is not None
    for html in (live, failed, killed, curve):
        assert colours_outside_theme_variables(html) == [], html
    assert "background:var(--jp-layout-color3" in live, "the progress track is the theme's, not light grey"
    assert "currentColor" in curve and 'stroke="var(--jp-brand-color1' in curve


def test_the_summary_is_short_lineage_collapsed_and_a_stopped_run_says_where() -> None:
    killed = RunSummary.from_result(result(RunStatus.KILLED, last_step=420, total_steps=1000,
                                           data_path="/data/synthetic-ner"))
    html, text = render_summary_html(killed), render_summary_text(killed)
    assert text.splitlines()[0] == "nbexec: run-1 KILLED at step 420/1000 in 1 min 12 s (2 x gloo)"
    assert "KILLED</span> at step 420/1000" in html
    assert "<details><summary>lineage</summary>" in html and "<details open" not in html
    assert "data: /data/synthetic-ner (no fingerprint)" in text, "the data the trainer said it used"
    finished = render_summary_text(RunSummary.from_result(result(last_step=10, total_steps=10)))
    assert finished.splitlines()[0] == "nbexec: run-1 FINISHED in 1 min 12 s (2 x gloo)"
    failed_early = render_summary_text(RunSummary.from_result(result(RunStatus.FAILED)))
    assert failed_early.splitlines()[0] == "nbexec: run-1 FAILED in 1 min 12 s (2 x gloo)", "no step: nothing said"


def test_live_view_shows_the_phase_speed_eta_and_each_ranks_use() -> None:
    from nbexec.runner.state import Phase, PhaseName

    resources = {"ranks": {"0": {"cpu_percent": 97.0, "rss_bytes": 4.12e8}, "1": {"cpu_percent": None,
                                                                                "rss_bytes": 4e8}},
                 "host": {"cpu_percent": 99.0, "memory_used_bytes": 6e9, "memory_total_bytes": 24e9}}
    snap = snapshot(progress={"step": 50, "total": 200, "rate": 4.2, "eta_s": 35.7},
                    phase=Phase(PhaseName.FINISHING, "saving the checkpoint"), resources=resources)
    html, text = render_html(snap), render_text(snap)
    assert 'data-phase="finishing"' in html and "finishing · saving the checkpoint" in html
    assert "step 50/200 (25%) · 4.2 steps/s · ETA 35.7 s" in html
    assert 'class="nbexec-resources"' in html and ">rank 0</td>" in html and ">97%</td>" in html
    assert ">412 MB</td>" in html and ">6.0 GB of 24.0 GB</td>" in html and ">—</td>" in html
    assert "  phase:    finishing · saving the checkpoint" in text
    assert "  use:      rank 0 CPU 97% mem 412 MB · rank 1 CPU — mem 400 MB · host CPU 99% mem 6.0 GB of 24.0 GB" in text


class WidgetRun(FakeRun):
    def __init__(self) -> None:
        super().__init__()
        self.status = RunStatus.RUNNING


def test_the_widget_gets_numbered_lines_and_the_head_moves_with_them(plan: LaunchPlan) -> None:
    from nbexec.notebook.live_widget import LiveViewWidget

    widget = LiveViewWidget()
    view = LiveRunView(plan, widget=widget, tail=3)
    view.show()
    run = WidgetRun()
    view.on_start(run)
    view.on_events([{"kind": "progress", "step": 5, "total": 10, "time": 1.0}])
    view.on_lines([line(0, "step 5/10"), line(1, "rank 1 is not shown")])
    deadline = time.monotonic() + 30  # guards a hang only: the refresher publishes within 50 ms
    while "step 5/10" not in str(widget.lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert widget.lines[-1][1:] == ["[rank0] step 5/10", False] and widget.lines[-1][0] >= 0
    assert "step 5/10 (50%)" in widget.head, "the bar came with the line it agrees with"
    view.on_partial([LogLine(0, "stderr", "bar 60%", 2.0, partial=True)])
    view.on_lines([line(0, f"more {i}") for i in range(5)])
    while "bar 60%" not in str(widget.lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    numbers = [n for n, _, _ in widget.lines]
    assert numbers[-1] == -1 and widget.lines[-1][2] is True, "the unfinished line last, marked stderr"
    assert numbers[:-1] == sorted(numbers[:-1]) and len(widget.lines) == 3, "bounded, in order"
    generation = widget.generation
    view.select_ranks([1])
    while widget.generation == generation and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any("rank 1 is not shown" in text for _, text, _ in widget.lines)

    # The panel keeps its widget: the summary goes into it, the last lines collapse under it.
    run.status = RunStatus.FINISHED
    view.on_end(result(run_name="flood", run_dir=plan.run_dir, last_step=10, total_steps=10))
    assert widget.over and widget.tail_label == "last lines of rank 1"
    assert widget.head.startswith("<div><b>flood</b>") and "FINISHED" in widget.head
    assert "[rank1] rank 1 is not shown" in widget.value


def test_finishing_is_shown_once_even_when_the_end_comes_sooner_than_a_redraw(plan: LaunchPlan) -> None:
    from nbexec.notebook.live_widget import LiveViewWidget

    heads: list[str] = []
    widget = LiveViewWidget()
    widget.observe(lambda change: heads.append(change["new"]), names="head")
    view = LiveRunView(plan, widget=widget, max_rate=0.001)  # a head every 1000 s: only the forced ones
    view.show()
    run = WidgetRun()
    view.on_start(run)
    view.on_events([{"kind": "phase", "phase": "finishing", "detail": "ending the MLflow run", "source": "parent"}])
    run.status = RunStatus.FINISHED
    view.on_end(result(run_name="flood", run_dir=plan.run_dir))
    phases = [re.findall(r'data-phase="(\w+)"', h) for h in heads]
    assert ["finishing"] in phases, heads
    assert "FINISHED" in heads[-1]
