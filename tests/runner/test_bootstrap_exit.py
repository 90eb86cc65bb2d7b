"""A rank's buffered stdout survives interpreter shutdown while the parent is still reading.

The worker bootstrap buffers stdout and flushes it from a background thread.
If that thread is inside a flush when the rank's script returns (the parent has
not caught up with a flood yet), the interpreter's own final flush used to find
the buffer locked by a frozen daemon thread and abort the rank after a good run:
"Fatal Python error: _enter_buffered_busy ... at interpreter shutdown" (SIGABRT).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import wait_until

PIPE_SIZE = 4096  # the smallest pipe Linux allows: a 20 kB flush cannot finish until the test reads

CHILD = textwrap.dedent("""
    import fcntl, sys, termios, struct
    from pathlib import Path
    from nbexec.child import bootstrap

    bootstrap._buffer_stdout()
    sys.stdout.write("x" * 20000)  # sits in the 64 KiB buffer until the flusher sends it
    def queued():
        return struct.unpack("i", fcntl.ioctl(1, termios.FIONREAD, b"\\0\\0\\0\\0"))[0]
    while queued() < {pipe_size}:  # the pipe is full: the flusher is stuck inside its flush
        pass
    Path(sys.argv[1]).write_text("returning")
    # the script ends here: interpreter shutdown with the flusher holding the buffer
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux only")
def test_the_rank_waits_for_a_flush_in_progress_instead_of_aborting_at_exit(tmp_path: Path) -> None:
    marker = tmp_path / "returning"
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(pipe_size=PIPE_SIZE), str(marker)],
                             stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        wait_until(lambda: marker.exists() or child.poll() is not None, 60, "the script to return")
        # CPython gives a locked buffer 1 s at shutdown before it aborts; before the fix the rank
        # died here with SIGABRT. Now it waits for its flush, which needs this test to read.
        try:
            early = child.wait(timeout=3)
        except subprocess.TimeoutExpired:
            early = None
        assert early is None, f"exited {early} before its output was read:\n{child.stderr.read().decode()}"
        received = b""
        with os.fdopen(read_end, "rb") as reader:
            while chunk := reader.read(65536):
                received += chunk
        assert child.wait(timeout=30) == 0, child.stderr.read().decode()
        assert received == b"x" * 20000
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
