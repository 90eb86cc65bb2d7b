"""Worker bootstrap: the first code torchrun runs in each rank, before the user's.

    python -m nbexec.child.bootstrap script.py [args...]
    python -m nbexec.child.bootstrap -m pkg.module [args...]

It prepares the rank, then runs the target exactly as ``python script.py`` or
``python -m pkg.module`` would (same ``sys.argv``, ``__main__``, ``sys.path[0]``):

1. Sends this rank's output to the parent over unix sockets, so the parent
   sees each rank's lines separately (under bare torchrun all ranks share one
   stdout and lines get glued). What Python code writes to ``sys.stdout`` and
   ``sys.stderr`` travels on one packet channel, each packet tagged with its
   stream, so stdout and stderr keep the order they were written in; file
   descriptors 1 and 2 (C code, child processes) get a socket each.
2. Dies with the launcher: if torchrun is killed, this rank gets SIGKILL.
3. Joins the job's MLflow run: when the parent opens the run while the job
   starts, the rank waits for it (``tracking.json``) and puts
   ``MLFLOW_RUN_ID`` / ``MLFLOW_EXPERIMENT_ID`` in its environment before the
   script runs, so the script's own MLflow logging (Hugging Face's Trainer,
   accelerate, ``mlflow.start_run()``) lands in that run.
4. Records the exception that ends the rank (type, message, traceback, the
   user's file and line) in ``logs/rank<N>.error.json``, in torchelastic's
   error file, and as a ``failure`` event, so the root cause is known even
   for scripts that do not use ``@record``, and known before torchrun reports.
5. Shows tracebacks from the user's code down: the bootstrap's and runpy's
   frames are left out of what the rank prints.
6. Answers for its stacks: a thread on a unix socket (faulthandler on a signal
   when the GIL stays taken) gives the stack of every thread when asked
   (``run.stacks()``, ``nbexec stacks``), even while the rank is blocked in a
   collective; it costs an idle thread until then (see :mod:`nbexec.stacks.hook`). When the rank's own
   collective times out, it asks its peers on this machine for their stacks
   before it exits, so the root cause can name the rank that never came.

Only the standard library (and nbexec's contract) is imported here: a rank must start fast.
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

import nbexec.contract as contract

FLUSH_INTERVAL_S = 0.05  # how stale buffered stdout may get before it is sent
PACKET_PAYLOAD = 1 << 15  # bytes per packet on the python channel (well under a socket's message limit)
PR_SET_PDEATHSIG = 1
CLOSE_BARRIER_S = 60  # how long a rank that succeeded waits for its peers before closing its process group
TRACKING_WAIT_S = 300.0  # longest wait for the parent to open the MLflow run (it gives up sooner)
PEER_STACKS_S = 5.0  # after a collective timeout, how long this rank waits for its peers' stacks


def main(argv: list[str]) -> None:
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        print("usage: python -m nbexec.child.bootstrap (script.py | -m module) [args...]",
              file=sys.stderr)
        raise SystemExit(2)
    rank = int(os.environ.get("RANK", "0"))
    _die_with_parent()
    _connect_streams(rank)
    sys.excepthook = _from_user_code(sys.excepthook)
    _join_tracked_run()
    _answer_for_stacks(rank)  # last: its record says the script is starting (stall detection counts from it)
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


def _answer_for_stacks(rank: int) -> None:
    """Install the stack-dump hook (unless ``NBEXEC_STACKS=0`` or outside nbexec); say why if it cannot be."""
    run_dir = os.environ.get(contract.ENV_RUN_DIR)
    if not run_dir or os.environ.get(contract.ENV_STACKS) == "0":
        return
    from nbexec.stacks.hook import install

    problem = install(Path(run_dir), rank)
    if problem is not None:
        print(f"nbexec: rank {rank}: stacks on demand are unavailable ({problem})", file=sys.stderr)


def _ask_peers_for_stacks(rank: int, message: str) -> None:
    """After a collective timeout: take the stacks of this machine's other ranks while they still run.

    torchrun stops them as soon as this rank exits; their stacks tell which rank
    never joined the collective (the root cause reads them, :mod:`nbexec.runner.rootcause`).
    """
    run_dir = os.environ.get(contract.ENV_RUN_DIR)
    if not run_dir:
        return
    try:
        from nbexec.stacks.parse import COLLECTIVE_TIMEOUT_RE

        if not COLLECTIVE_TIMEOUT_RE.search(message):
            return
        from nbexec.stacks.request import rank_processes, request_dumps

        peers = [r for r in rank_processes(Path(run_dir)) if r != rank]
        if peers:
            request_dumps(Path(run_dir), peers, timeout=PEER_STACKS_S)
    except Exception:  # noqa: BLE001 - never in the way of recording the failure
        pass


# --- output -------------------------------------------------------------------------


def _connect_streams(rank: int) -> None:
    """Point fds 1 and 2, and Python's ``sys.stdout``/``sys.stderr``, at the parent."""
    if not os.environ.get(contract.ENV_LOG_SOCKET):
        return  # not launched by nbexec: keep the inherited stdout/stderr
    fd_out = _connect_fd(rank, 1, "stdout")
    _connect_fd(rank, 2, "stderr")
    packets = _connect_packets(rank)
    if packets is not None:
        out_raw: io.RawIOBase = _PacketWriter(packets, b"o", fd=1)
        err_raw: io.RawIOBase = _PacketWriter(packets, b"e", fd=2)
    elif fd_out:  # no packet channel: Python's writes go through the fds (stdout first on stderr writes)
        out_raw, err_raw = io.FileIO(1, "w", closefd=False), io.FileIO(2, "w", closefd=False)
    else:
        return
    _replace_std_streams(out_raw, err_raw)


def _connect_fd(rank: int, fd: int, name: str) -> bool:
    """Point file descriptor ``fd`` at a stream socket of the parent's; True when connected."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(os.environ[contract.ENV_LOG_SOCKET])
        header = json.dumps({"rank": rank, "stream": name, "pid": os.getpid()})
        sock.sendall(header.encode() + b"\n")
    except OSError as err:
        print(f"nbexec: rank {rank} could not connect its {name} to the parent "
              f"({err}); output goes to the launcher log", file=sys.stderr)
        return False
    sys.stdout.flush() if fd == 1 else sys.stderr.flush()
    os.dup2(sock.fileno(), fd)  # C-level writes (NCCL, gloo, warnings) follow too
    sock.close()
    return True


def _connect_packets(rank: int) -> socket.socket | None:
    """The packet channel for Python-level writes, or None (then they go through the fds)."""
    path = os.environ.get(contract.ENV_LOG_PACKETS)
    if not path or not hasattr(socket, "SOCK_SEQPACKET"):
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        sock.send(json.dumps({"rank": rank, "stream": "python", "pid": os.getpid()}).encode())
    except OSError as err:
        print(f"nbexec: rank {rank} could not open its output channel ({err}); "
              "stdout and stderr may interleave out of order", file=sys.stderr)
        return None
    return sock


class _PacketWriter(io.RawIOBase):
    """A raw stream that sends each write as packets ``<tag><bytes>`` on a SOCK_SEQPACKET socket.

    A packet is delivered whole or not at all, so processes forked from the
    rank (data loader workers) can share the socket without tearing each
    other's packets. ``fileno()`` is the real fd (1 or 2), for code that
    hands it to a child process or to faulthandler.
    """

    def __init__(self, sock: socket.socket, tag: bytes, *, fd: int) -> None:
        super().__init__()
        self._sock = sock
        self._tag = tag
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        for start in range(0, len(view), PACKET_PAYLOAD):
            self._sock.send(self._tag + view[start : start + PACKET_PAYLOAD].tobytes())
        return len(view)


def _replace_std_streams(out_raw: io.RawIOBase, err_raw: io.RawIOBase) -> None:
    """New ``sys.stdout`` (buffered, flushed every 50 ms) and ``sys.stderr`` (unbuffered).

    PYTHONUNBUFFERED (kept for the rank's own child processes) makes every
    print a separate send: a flood then costs the rank ~6x more than writing
    to a file. Buffering with a timed flush keeps lines live (<= 50 ms late)
    at a file's cost. Order is kept: text and ``sys.stdout.buffer`` writes go
    through one buffer, and anything written to stderr (which stays
    unbuffered, so errors show at once) first flushes stdout.
    """
    import threading

    old_out, old_err = sys.stdout, sys.stderr
    old_out.flush()
    old_err.flush()
    out_buffer = io.BufferedWriter(out_raw, buffer_size=1 << 16)
    sys.stdout = io.TextIOWrapper(
        out_buffer, encoding=old_out.encoding, errors=old_out.errors, write_through=True
    )
    sys.stderr = _StderrAfterStdout(
        err_raw, encoding=old_err.encoding, errors=old_err.errors, write_through=True,  # type: ignore[arg-type]
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


def _buffer_stdout() -> None:
    """Buffer fd 1's ``sys.stdout`` with the timed flush (no packet channel; kept for tests)."""
    _replace_std_streams(io.FileIO(1, "w", closefd=False), io.FileIO(2, "w", closefd=False))


class _StderrAfterStdout(io.TextIOWrapper):
    """stderr that flushes stdout first, so lines keep the order they were printed in."""

    def write(self, text: str) -> int:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        return super().write(text)


def _from_user_code(hook):  # type: ignore[no-untyped-def]
    """``sys.excepthook`` that prints a traceback from the user's code down.

    The frames of this bootstrap and of runpy above the script are noise to
    the person reading it (11 of them for a two-line script). A hook the
    script installs itself replaces this one, frames and all.
    """

    def excepthook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        trimmed = _user_frames(tb)
        if isinstance(exc, BaseException) and trimmed is not tb:
            exc.with_traceback(trimmed)  # the default hook prints exc.__traceback__, not tb
        return hook(exc_type, exc, trimmed)

    return excepthook


# --- tracking -----------------------------------------------------------------------


def _join_tracked_run() -> None:
    """Put the job's MLflow run in this rank's environment, and keep MLflow calls in it.

    The parent opens the run while torchrun and the ranks start and writes
    ``tracking.json`` once it is open (or could not be opened: the job then
    runs untracked). A script importing torch takes longer than that, so the
    wait usually costs nothing; the parent tells how long it may take.
    """
    path = os.environ.get(contract.ENV_TRACKING_FILE)
    if path:
        info = _wait_for_json(Path(path), TRACKING_WAIT_S)
        if info.get("state") == "open" and info.get("run_id"):
            os.environ["MLFLOW_RUN_ID"] = str(info["run_id"])
            os.environ["MLFLOW_EXPERIMENT_ID"] = str(info["experiment_id"])
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        from nbexec.child.mlflow_pin import pin_fluent_runs

        os.environ[contract.ENV_JOB_RUN_ID] = run_id  # runs the script creates nest under it (mlflow_context)

        pin_fluent_runs(run_id, os.environ.get("MLFLOW_EXPERIMENT_ID"))


def _wait_for_json(path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):  # not written yet (it is renamed into place whole)
            pass
        if time.monotonic() >= deadline:
            print(f"nbexec: rank {os.environ.get('RANK', '?')}: the job's MLflow run was not ready after "
                  f"{timeout:.0f} s; running without it", file=sys.stderr)
            return {}
        time.sleep(delay)
        delay = min(0.05, delay * 1.5)


# --- failures -----------------------------------------------------------------------


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


def _user_location(tb: object) -> str:
    """``file:line`` of the innermost frame in the user's own code (not the stdlib, a library or nbexec)."""
    import sysconfig

    skip = tuple(
        {str(Path(p).resolve()) + os.sep for p in (sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib"))}
        | {str(Path(__file__).resolve().parents[1]) + os.sep}
    )
    where = ""
    while tb is not None:
        code = tb.tb_frame.f_code  # type: ignore[attr-defined]
        name = code.co_filename
        if not name.startswith("<") and not str(Path(name).resolve()).startswith(skip):
            where = f"{_short_path(name)}:{tb.tb_lineno}"  # type: ignore[attr-defined]
        tb = tb.tb_next  # type: ignore[attr-defined]
    return where


def _short_path(name: str) -> str:
    try:
        return os.path.relpath(name) if not os.path.relpath(name).startswith("..") else name
    except ValueError:
        return name


def _secret_scrubber():  # type: ignore[no-untyped-def]
    """``text -> text`` with the secret values this rank knows replaced (environment, config, argv)."""
    try:
        from nbexec.redact import Scrubber

        config_secrets = json.loads(os.environ.get(contract.ENV_CONFIG_SECRETS) or "{}")
        known = Scrubber.from_sources(None, os.environ, argv=sys.argv)
        return Scrubber([*known.values, *config_secrets.values()]).text
    except Exception:  # noqa: BLE001 - never in the way of recording the failure
        return lambda text: text


def _record_failure(rank: int, exc: BaseException, exit_code: int) -> None:
    """Write the error record and the failure event; never let bookkeeping hide the real exception."""
    try:
        sys.stdout.flush()  # what the rank printed comes before its failure
    except Exception:  # noqa: BLE001
        pass
    try:
        if isinstance(exc, SystemExit):
            tb_text = where = ""
            message = str(exc.code) if not isinstance(exc.code, int) else f"sys.exit({exc.code})"
        else:
            user_tb = _user_frames(exc.__traceback__)
            tb_text = "".join(traceback.format_exception(type(exc), exc, user_tb))  # type: ignore[call-overload]
            where = _user_location(user_tb)
            message = str(exc)
            _ask_peers_for_stacks(rank, message)
        exc_type = type(exc).__qualname__
        if type(exc).__module__ not in ("builtins", "__main__"):
            exc_type = f"{type(exc).__module__}.{exc_type}"
        scrub = _secret_scrubber()  # an exception's text may carry a token (a URL, a header)
        message, tb_text, where = scrub(message), scrub(tb_text), scrub(where)
        now = time.time()
        record = {
            "rank": rank,
            "exit_code": exit_code,
            "exc_type": exc_type,
            "message": message,
            "traceback": tb_text,
            "where": where,
            "time": now,
            "pid": os.getpid(),
        }
        run_dir = os.environ.get(contract.ENV_RUN_DIR)
        if run_dir:
            path = contract.rank_error_path(Path(run_dir), rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2))
        events = os.environ.get(contract.ENV_EVENTS)
        if events:  # one O_APPEND write: whole even beside the trainer's own events
            event = {"kind": "failure", "time": now, "rank": rank, "exit_code": exit_code,
                     "exc_type": exc_type, "message": message[:2000], "where": where}
            fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(event) + "\n").encode())
            finally:
                os.close(fd)
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
