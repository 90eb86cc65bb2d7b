"""What a terminal would show is what nbexec shows: live \\r bars, stdout and stderr in the order
written, and a failure that reads in ten seconds."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import nbexec
from nbexec.runner.sinks import Sink

from .conftest import SCRIPTS

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scripts"
JOB_WAIT_S = 300  # a guard against a job that never ends, not a time budget


def nbexec_train(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "nbexec.cli", "train", "--nproc", "2", "--no-tracking",
            "--output", str(tmp_path / "runs"), *args]


def read_until_exit(fd: int, proc: subprocess.Popen, react) -> bytes:  # noqa: ANN001
    """Read ``fd`` until the process exits and the stream ends; ``react(output)`` after each chunk."""
    out = b""
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if not chunk:
                break
            out += chunk
            react(out)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
        raise AssertionError(f"the job did not end within {JOB_WAIT_S} s; output so far:\n{out.decode(errors='replace')}")
    proc.wait(timeout=60)
    return out


def test_a_tqdm_bar_is_drawn_in_place_in_a_terminal_while_the_script_runs(tmp_path):
    stop = tmp_path / "stop"
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(nbexec_train(tmp_path, "--entrypoint", str(SCRIPTS / "tqdm_until_file.py"), "--",
                                         str(stop)), stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)

    def see_the_bar(out: bytes) -> None:
        if b"3/10" in out and not stop.exists():  # the script waits at step 3 until it is seen
            stop.write_text("seen")

    try:
        out = read_until_exit(main, proc, see_the_bar).decode(errors="replace")
    finally:
        os.close(main)
    assert proc.returncode == 0, out
    assert "saw_stop=True" in out, f"the bar was not shown while the script waited at step 3:\n{out}"
    # drawn in place: the frame ends where the status line is cleared for the next, not with a newline
    frame = out.index("[rank0!] train:  30%|")
    ends = [i for i in (out.find("\r", frame), out.find("\n", frame)) if i >= 0]
    assert ends and out[min(ends)] == "\r" and out.startswith("\r\x1b[K", min(ends)), out
    frames = [seg for seg in out.replace("\r\n", "\n").split("\n") if "train:  30%|" in seg and "\x1b[K" not in seg]
    assert frames == [], f"a bar frame was printed as a line: {frames}"
    assert "[rank0!] train: 100%|" in out  # the finished bar is a line of the output


def test_off_a_terminal_the_bar_is_printed_as_lines_while_the_script_runs(tmp_path):
    stop = tmp_path / "stop"
    proc = subprocess.Popen(nbexec_train(tmp_path, "--entrypoint", str(SCRIPTS / "tqdm_until_file.py"), "--",
                                         str(stop)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def see_the_bar(out: bytes) -> None:
        if b"3/10" in out and not stop.exists():
            stop.write_text("seen")

    out = read_until_exit(proc.stdout.fileno(), proc, see_the_bar).decode(errors="replace")
    assert proc.returncode == 0, out
    assert "saw_stop=True" in out, f"the bar was not printed while the script waited at step 3:\n{out}"
    assert "\x1b[" not in out and "\r" not in out  # plain lines for a log file
    bar_lines = [ln for ln in out.splitlines() if ln.startswith("[rank0!] train:")]
    assert any("3/10" in ln for ln in bar_lines) and bar_lines[-1].startswith("[rank0!] train: 100%|")


def test_stdout_and_stderr_keep_the_order_the_script_wrote_them_in(tmp_path):
    class Collect(Sink):
        def __init__(self) -> None:
            self.lines = []

        def on_lines(self, lines) -> None:  # noqa: ANN001
            self.lines.extend(lines)

    n = 600
    expected = [f"E{i}" if i % 3 == 1 else f"O{i}" for i in range(n)] + ["O-last"]
    shown = Collect()
    run = nbexec.launch(entrypoint=SCRIPTS / "interleave.py", script_args=[str(n)], output_dir=tmp_path, nproc=2,
                        sinks=[shown], overrides=["tracking.enabled=false"])
    run.result(timeout=JOB_WAIT_S)

    for rank in (0, 1):
        assert (tmp_path / run.name / f"logs/rank{rank}.log").read_text().splitlines() == expected, f"rank {rank}"
        seen = [(ln.text, ln.stream) for ln in shown.lines if ln.rank == rank]
        assert seen == [(t, "stderr" if t.startswith("E") else "stdout") for t in expected], f"rank {rank}"
    assert [ln.text for ln in run.lines(0)] == expected


def test_a_rank_1_failure_reads_in_under_40_terminal_lines(tmp_path):
    proc = subprocess.run(nbexec_train(tmp_path, "--entrypoint", str(FIXTURES / "fail_rank1.py")),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=JOB_WAIT_S)
    out = proc.stdout.decode()
    lines = out.splitlines()
    assert proc.returncode == 1, out
    assert len(lines) <= 40, f"{len(lines)} lines:\n{out}"
    # the rank's own traceback, from the user's code down
    assert "[rank1!] Traceback (most recent call last):" in lines
    assert not [ln for ln in lines if "bootstrap.py" in ln or "runpy" in ln], out
    # torchrun's report stays in launcher.log
    assert "ChildFailedError" not in out
    run_dir = next((tmp_path / "runs").iterdir())
    assert "ChildFailedError" in (run_dir / "logs" / "launcher.log").read_text()
    # the root cause, once, at the end: rank, exception, message, the user's file:line
    assert sum("root cause:" in ln for ln in lines) == 1
    tail = "\n".join(lines[-4:])
    assert "root cause: rank 1 failed (exit code 1): ValueError: rank one exploded on batch 17" in tail
    assert f"at:         {FIXTURES / 'fail_rank1.py'}:11" in tail or "fail_rank1.py:11" in tail, tail
