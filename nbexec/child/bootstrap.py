"""Worker bootstrap: the first code torchrun runs in each rank, before the user's.

    python -m nbexec.child.bootstrap script.py [args...]
    python -m nbexec.child.bootstrap -m pkg.module [args...]

It does three things, then runs the target exactly as ``python script.py`` or
``python -m pkg.module`` would (same ``sys.argv``, ``__main__``, ``sys.path[0]``):

1. Sends this rank's stdout and stderr to the parent over a unix socket, one
   connection per stream, so the parent sees each rank's lines separately
   (under bare torchrun all ranks share one stdout and lines get glued).
2. Dies with the launcher: if torchrun is killed, this rank gets SIGKILL.
3. Records the exception that ends the rank (type, message, traceback, time)
   in ``logs/rank<N>.error.json`` and in torchelastic's error file, so the
   root cause is known even for scripts that do not use ``@record``.

Only the standard library is imported here: a rank must start fast.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

ENV_LOG_SOCKET = "NBEXEC_LOG_SOCKET"
FLUSH_INTERVAL_S = 0.05  # how stale buffered stdout may get before it is sent
ENV_RUN_DIR = "NBEXEC_RUN_DIR"
PR_SET_PDEATHSIG = 1
CLOSE_BARRIER_S = 60  # how long a rank that succeeded waits for its peers before closing its process group


def main(argv: list[str]) -> None:
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        print("usage: python -m nbexec.child.bootstrap (script.py | -m module) [args...]",
              file=sys.stderr)
        raise SystemExit(2)
    rank = int(os.environ.get("RANK", "0"))
    _die_with_parent()
    if _connect_streams(rank):
        _buffer_stdout()
    try:
        _run_target(argv)
    except SystemExit as exc:
        if _exit_code(exc) != 0:
            _record_failure(rank, exc, _exit_code(exc))
        else:
            _close_process_group()
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised unchanged
        _record_failure(rank, exc, 1)
        raise
    _close_process_group()


def _close_process_group() -> None:
    """Destroy a process group the script left open, while the interpreter is whole.

    Plenty of DDP scripts end without ``destroy_process_group()``. Gloo's
    threads then still hold work objects when the interpreter shuts down, and
    the rank aborts after a good run ("terminate called without an active
    exception", SIGABRT): 3 of 6 runs of such a script under bare torchrun
    here. On success only, through the child API's own teardown (ranks wait
    for each other first; a peer that never comes costs a minute, not a hang).
    """
    if "torch.distributed" not in sys.modules:  # the script never used it: import nothing
        return
    try:
        from nbexec.child.context import destroy_process_group_if_needed

        destroy_process_group_if_needed(barrier_timeout_s=CLOSE_BARRIER_S)
    except Exception as err:  # noqa: BLE001 - the script succeeded; say why, exit as it would have
        print(f"nbexec: rank {os.environ.get('RANK', '?')} could not close its process group: {err}",
              file=sys.stderr)


def _run_target(argv: list[str]) -> None:
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        sys.argv = [module, *args]  # runpy sets argv[0] to the module's file
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script, args = argv[0], argv[1:]
        sys.argv = [script, *args]
        # `python script.py` puts the script's directory first on sys.path;
        # `python -m nbexec.child.bootstrap` put the cwd there instead.
        sys.path[0] = str(Path(script).resolve().parent)
        runpy.run_path(script, run_name="__main__")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its parent (the torchrun agent) dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not fatal: the parent also kills the job's process tree on cancel


def _connect_streams(rank: int) -> bool:
    """Point fds 1 and 2 at the parent's socket; True when stdout was connected."""
    path = os.environ.get(ENV_LOG_SOCKET)
    if not path:
        return False  # not launched by nbexec: keep the inherited stdout/stderr
    connected = False
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            header = json.dumps({"rank": rank, "stream": name, "pid": os.getpid()})
            sock.sendall(header.encode() + b"\n")
        except OSError as err:
            print(f"nbexec: rank {rank} could not connect its {name} to the parent "
                  f"({err}); output goes to the launcher log", file=sys.stderr)
            continue
        sys.stdout.flush() if fd == 1 else sys.stderr.flush()
        os.dup2(sock.fileno(), fd)  # C-level writes (NCCL, gloo, warnings) follow too
        sock.close()
        connected = connected or fd == 1
    return connected


def _buffer_stdout() -> None:
    """Send stdout in blocks, flushed every 50 ms, instead of one syscall per line.

    PYTHONUNBUFFERED (kept for the rank's own child processes) makes every
    print a separate send: a flood then costs the rank ~6x more than writing
    to a file. Buffering with a timed flush keeps lines live (<= 50 ms late)
    at a file's cost. Order is kept: text and ``sys.stdout.buffer`` writes go
    through one buffer, and anything written to stderr (which stays
    unbuffered, so errors show at once) first flushes stdout.
    """
    import io
    import threading

    old_out, old_err = sys.stdout, sys.stderr
    out_buffer = io.BufferedWriter(io.FileIO(1, "w", closefd=False), buffer_size=1 << 16)
    sys.stdout = io.TextIOWrapper(
        out_buffer, encoding=old_out.encoding, errors=old_out.errors, write_through=True
    )
    sys.stderr = _StderrAfterStdout(
        io.FileIO(2, "w", closefd=False), encoding=old_err.encoding, errors=old_err.errors,
        write_through=True,
    )

    stop = threading.Event()

    def flush_until_exit() -> None:
        while not stop.wait(FLUSH_INTERVAL_S):
            try:
                sys.stdout.flush()
            except Exception:  # noqa: BLE001 - closed or replaced stdout: keep going
                pass

    flusher = threading.Thread(target=flush_until_exit, name="nbexec-stdout-flush", daemon=True)
    flusher.start()

    def stop_flusher() -> None:
        # At interpreter shutdown the main thread flushes stdout itself. Were the
        # flusher still inside a flush then (a full socket: a flood the parent is
        # still reading), it would hold the buffer's lock while daemon threads are
        # frozen, and the rank would abort after a good run ("Fatal Python error:
        # _enter_buffered_busy ... at interpreter shutdown", SIGABRT; 2 in 30 runs
        # of a 500,000-line flood here). So it finishes its flush and stops first.
        stop.set()
        flusher.join()

    atexit.register(stop_flusher)


class _StderrAfterStdout(io.TextIOWrapper):
    """stderr that flushes stdout first, so lines keep the order they were printed in."""

    def write(self, text: str) -> int:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        return super().write(text)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # `sys.exit("message")` prints the message and exits 1


def _user_frames(tb: object) -> object:
    """Skip the bootstrap's and runpy's frames: the traceback starts in user code."""
    ours = (__file__, runpy.__file__, "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:  # type: ignore[attr-defined]
        tb = tb.tb_next  # type: ignore[attr-defined]
    return tb


def _record_failure(rank: int, exc: BaseException, exit_code: int) -> None:
    """Write the error record; never let bookkeeping hide the real exception."""
    try:
        sys.stdout.flush()  # what the rank printed comes before its failure
    except Exception:  # noqa: BLE001
        pass
    try:
        if isinstance(exc, SystemExit):
            tb_text = ""
            message = str(exc.code) if not isinstance(exc.code, int) else f"sys.exit({exc.code})"
        else:
            tb_text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
            message = str(exc)
        exc_type = type(exc).__qualname__
        if type(exc).__module__ not in ("builtins", "__main__"):
            exc_type = f"{type(exc).__module__}.{exc_type}"
        now = time.time()
        record = {
            "rank": rank,
            "exit_code": exit_code,
            "exc_type": exc_type,
            "message": message,
            "traceback": tb_text,
            "time": now,
            "pid": os.getpid(),
        }
        run_dir = os.environ.get(ENV_RUN_DIR)
        if run_dir:
            path = Path(run_dir) / "logs" / f"rank{rank}.error.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2))
        elastic_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
        if elastic_file and not isinstance(exc, SystemExit):
            # torchelastic's own format, so torchrun's summary shows the traceback too
            payload = {
                "message": {
                    "message": f"{type(exc).__name__}: {message}",
                    "extraInfo": {"py_callstack": tb_text, "timestamp": str(int(now))},
                }
            }
            Path(elastic_file).write_text(json.dumps(payload))
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
