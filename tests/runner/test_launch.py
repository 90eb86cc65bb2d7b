"""Real torchrun jobs (gloo, 2 processes) through nbexec.launch."""

from __future__ import annotations

import json
import re
import threading

import pytest
import yaml

import nbexec
from nbexec import RunStatus, TrainingCancelled, TrainingFailed

pytestmark = pytest.mark.slow


def test_two_ranks_stream_separately_and_write_the_run_dir(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "ok.py", output_dir=tmp_path, nproc=2)
    result = run.result(timeout=120)

    assert result.status is RunStatus.FINISHED and result.exit_code == 0
    run_dir = tmp_path / run.name
    for name in ("config.yaml", "command.txt", "result.json", "logs/rank0.log", "logs/rank1.log"):
        assert (run_dir / name).is_file(), name
    for rank in (0, 1):
        lines = (run_dir / f"logs/rank{rank}.log").read_text().splitlines()
        assert lines[:3] == [f"rank {rank}/2 step {i}" for i in range(3)]
        assert lines[3] == f"rank {rank} warning on stderr"
        shown = [(ln.stream, ln.text) for ln in run.lines(rank)]
        assert ("stderr", f"rank {rank} warning on stderr") in shown
        assert ("stdout", f"rank {rank}/2 step 0") in shown
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["status"] == "FINISHED" and saved["nproc"] == 2 and saved["backend"] == "gloo"
    command = (run_dir / "command.txt").read_text().splitlines()
    assert json.loads(command[1]) == list(run.plan.argv)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["launch"]["nproc"] == 2


def test_failure_on_rank1_names_rank_exception_and_keeps_rank0_log(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "fail_rank1.py", output_dir=tmp_path, nproc=2)
    with pytest.raises(TrainingFailed) as info:
        run.result(timeout=120)

    err = info.value
    assert err.rank == 1 and err.exit_code == 1
    assert err.root_cause.exc_type == "ValueError"
    assert err.root_cause.message == "rank one exploded on batch 17"
    source = (scripts / "fail_rank1.py").read_text().splitlines()
    raise_line = next(i for i, text in enumerate(source, 1) if text.strip().startswith("raise ValueError"))
    assert f'fail_rank1.py", line {raise_line}' in err.root_cause.traceback
    assert "bootstrap.py" not in err.root_cause.traceback  # starts in user code
    assert "rank1.log" in str(err) and "ValueError: rank one exploded" in str(err)
    rank0 = (tmp_path / run.name / "logs/rank0.log").read_text().splitlines()
    assert rank0[:5] == [f"rank 0 line {i}" for i in range(5)]
    saved = json.loads((tmp_path / run.name / "result.json").read_text())
    assert saved["status"] == "FAILED" and saved["root_cause"]["rank"] == 1


def test_third_party_script_with_positional_args_runs_unchanged(tmp_path, scripts):
    dest = tmp_path / "args.json"
    args = ["in put.txt", str(dest), "--epochs", "3", "--name", "a;b $(x)"]
    run = nbexec.launch(entrypoint=scripts / "positional.py", script_args=args, output_dir=tmp_path, nproc=2)
    run.result(timeout=120)

    seen = json.loads(dest.read_text())
    assert seen["source"] == "in put.txt" and seen["dest"] == str(dest)
    assert seen["epochs"] == 3 and seen["name"] == "a;b $(x)"


def test_a_ddp_script_that_never_destroys_its_process_group_has_it_closed_before_exit(tmp_path, scripts):
    # Left open, gloo aborts such a rank at interpreter exit after a good run
    # (SIGABRT in 3 of 6 bare torchrun runs here); the bootstrap closes it first.
    marks = tmp_path / "marks"
    marks.mkdir()
    run = nbexec.launch(entrypoint=scripts / "ddp_no_destroy.py", script_args=[str(marks)],
                        output_dir=tmp_path, nproc=2)
    result = run.result(timeout=120)

    assert result.status is RunStatus.FINISHED
    # what each rank's own atexit handler saw, after the script and the bootstrap were done
    assert [(marks / f"rank{r}.txt").read_text() for r in (0, 1)] == ["False", "False"]
    assert any("all_reduce gave 2" in line.text for line in run.lines(1))


def test_child_api_events_reach_the_handle(tmp_path, scripts):
    run = nbexec.launch(
        {"training": {"lr": 0.5}}, entrypoint=scripts / "report.py", output_dir=tmp_path, nproc=2
    )
    result = run.result(timeout=120)

    assert result.metrics == {"loss": pytest.approx(0.2)}
    assert run.progress["step"] == 5 and run.progress["total"] == 5
    assert {ev["rank"] for ev in run.events if ev["kind"] != "progress"} == {0}  # only the main rank reports
    # ... but every rank's progress, while stalls are watched (launch.stall_timeout): a rank falling behind shows
    assert {ev["rank"] for ev in run.events if ev["kind"] == "progress"} == {0, 1}
    assert run.progress["rank"] == 0  # the progress shown is rank 0's
    assert result.checkpoint == tmp_path / run.name / "checkpoint"
    assert "config lr=0.5" in run.lines(1)[-1].text


def test_progress_bars_keep_their_final_picture_in_views_and_files(tmp_path, scripts):
    """The rank log keeps what a terminal shows once each line is done: one bar line, not its frames;
    bytes that are not UTF-8 stay as they were in the file."""
    run = nbexec.launch(entrypoint=scripts / "progress.py", output_dir=tmp_path, nproc=1)
    run.result(timeout=120)

    texts = [ln.text for ln in run.lines(0)]
    assert texts == ["progress 100%", "bad bytes \ufffd\ufffd end", "no newline at the end"]
    raw = (tmp_path / run.name / "logs/rank0.log").read_bytes()
    assert raw == b"progress 100%\nbad bytes \xff\xfe end\nno newline at the end\n"


def test_flood_of_200k_lines_loses_and_glues_nothing(tmp_path, scripts):
    n = 100_000  # per rank: 200,000 lines in all
    run = nbexec.launch(entrypoint=scripts / "flood.py", script_args=[str(n)], output_dir=tmp_path, nproc=2)
    run.result(timeout=300)

    pattern = re.compile(r"rank (\d) line (\d{7}) the quick brown fox jumps over the lazy dog")
    for rank in (0, 1):
        lines = (tmp_path / run.name / f"logs/rank{rank}.log").read_text().splitlines()
        assert len(lines) == n
        for i, line in enumerate(lines):
            m = pattern.fullmatch(line)
            assert m and int(m.group(1)) == rank and int(m.group(2)) == i, line
        assert len(run.lines(rank)) <= 2000  # the in-memory tail is bounded


def test_two_launches_at_once_in_one_process(tmp_path, scripts):
    runs = [nbexec.launch(entrypoint=scripts / "ok.py", output_dir=tmp_path, nproc=2) for _ in range(2)]
    results = [r.result(timeout=180) for r in runs]

    assert [r.status for r in results] == [RunStatus.FINISHED] * 2
    assert results[0].run_dir != results[1].run_dir
    for r in results:
        assert (r.run_dir / "logs/rank1.log").read_text().startswith("rank 1/2 step 0\n")


def test_launch_from_a_short_lived_thread_is_not_killed_when_it_exits(tmp_path, scripts):
    runs = []
    thread = threading.Thread(
        target=lambda: runs.append(nbexec.launch(entrypoint=scripts / "ok.py", output_dir=tmp_path, nproc=2))
    )
    thread.start()
    thread.join()  # the launching thread is gone before the job is done

    result = runs[0].result(timeout=120)
    assert result.status is RunStatus.FINISHED


def test_cancelled_result_raises_and_is_recorded(tmp_path, scripts):
    run = nbexec.launch(entrypoint=scripts / "hang.py", output_dir=tmp_path, nproc=1)
    run.cancel(grace=1)
    assert run.status is RunStatus.KILLED
    with pytest.raises(TrainingCancelled):
        run.result(timeout=30)
    assert json.loads((tmp_path / run.name / "result.json").read_text())["status"] == "KILLED"


def test_flood_into_a_stuck_display_keeps_parent_memory_bounded(tmp_path, scripts):
    import psutil

    from nbexec.runner.sinks import Sink

    class StuckDisplay(Sink):
        def __init__(self):
            self.release = threading.Event()

        def on_lines(self, lines):
            self.release.wait()

    me = psutil.Process()
    before = me.memory_info().rss
    display = StuckDisplay()
    n = 300_000  # per rank; ~70 MB of LogLines if nothing were dropped
    run = nbexec.launch(entrypoint=scripts / "flood.py", script_args=[str(n)], output_dir=tmp_path,
                        nproc=2, sinks=[display])
    peak = before
    while not run.done():
        peak = max(peak, me.memory_info().rss)
        try:
            run.wait(0.2)
        except TimeoutError:
            pass
    display.release.set()
    run.result(timeout=60)
    assert peak - before < 40 * 2**20, f"parent grew by {(peak - before) / 2**20:.0f} MiB"
    for rank in (0, 1):  # the files still have everything
        with open(tmp_path / run.name / f"logs/rank{rank}.log", "rb") as fh:
            assert sum(1 for _ in fh) == n


def test_a_stdout_backlog_larger_than_a_socket_buffer_stays_before_the_stderr_line_after_it(tmp_path, scripts):
    # stdout and stderr reach the parent on separate sockets; the stderr line is written after the
    # whole backlog was flushed, so the rank file must show every backlog line first.
    lines = 20_000  # ~2 MB per rank: many reads of the stdout socket while stderr is already waiting
    run = nbexec.launch(entrypoint=scripts / "stdout_backlog.py", script_args=[str(lines)],
                        output_dir=tmp_path, nproc=2)
    assert run.result(timeout=120).status is RunStatus.FINISHED
    for rank in (0, 1):
        text = (tmp_path / run.name / f"logs/rank{rank}.log").read_text().splitlines()
        assert len(text) == lines + 1
        assert text[-1] == f"rank {rank} after the backlog, on stderr", text.index(
            f"rank {rank} after the backlog, on stderr")
