"""The rank's side of stacks on demand, installed by the worker bootstrap: two ways to answer.

1. **A thread that answers on a unix socket** (the first choice). A requester
   connects; the thread takes the GIL, reads every thread's frames
   (``sys._current_frames()``) and writes them back, then closes: the end of
   the answer is the end of the stream. Holding the GIL, it reads frames that
   no other thread is changing, so it is safe whatever the rank is doing
   (importing, allocating, blocked in a collective: a collective waits with
   the GIL released). It sits in ``accept()`` until asked: no CPU, no timer.
2. **faulthandler on a signal** (the fallback, for a rank whose GIL stays
   taken: stuck in C code that never releases it). ``faulthandler.register``
   writes every thread's stack from the C signal handler itself, without the
   GIL. That is also why it is only the fallback: it reads frames other code
   may be changing, and a dump that lands while the rank is busy running
   Python (an import) can crash it (seen once in 70 dumps during ``import
   torch`` here); a rank stuck in C for a second is not busy that way.

Either way the dump has faulthandler's format and ends up in
``logs/rank<N>.stacks`` after the request's marker line (the requester writes
the thread's answer there; faulthandler writes its own), not in the rank's
stdout or stderr: those are the user's log, where a dump would be mixed into
their lines. Only file names, line numbers and function names are written:
no local variable values.

Once both are in place, the rank writes ``logs/rank<N>.process.json`` (pid,
host, the socket, the signal, what its last line looks like): a requester
signals only a process that has recorded the hook and handles the signal, so
a rank is never killed by a signal it does not handle.

Standard library only (and nbexec's contract): it runs in every rank before
the user's script.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

import nbexec.contract as contract

# A real-time signal: none of the common ones is free of other owners (SIGUSR1 is Slurm's and
# Lightning's requeue signal, SIGUSR2 submitit's). Requesters read it from the process record.
STACKS_SIGNAL = int(signal.SIGRTMIN) + 6 if hasattr(signal, "SIGRTMIN") else int(signal.SIGUSR2)

MAX_FRAMES = 100  # per thread, as faulthandler
REQUEST = b"stacks\n"

_dump_file: IO[bytes] | None = None  # kept open for the rank's life (faulthandler writes to its fd)


def install(run_dir: Path, rank: int) -> str | None:
    """Install both ways to answer and record this process; returns why not, or None when installed.

    Never raises: a rank without stacks on demand still trains.
    """
    global _dump_file
    import faulthandler

    try:
        path = contract.rank_stacks_path(run_dir, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        dump_file = open(path, "ab", buffering=0)  # noqa: SIM115 - open for the rank's life; O_APPEND
        faulthandler.register(STACKS_SIGNAL, file=dump_file, all_threads=True, chain=False)
        _dump_file = dump_file
        address = _serve(rank)
        _write_json(contract.rank_process_path(run_dir, rank), _process_record(rank, address))
    except (OSError, ValueError, RuntimeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _serve(rank: int) -> str | None:
    """Start the answering thread on a unix socket beside the rank's log sockets; its path, or None."""
    log_socket = os.environ.get(contract.ENV_LOG_SOCKET)
    if not log_socket or not hasattr(socket, "AF_UNIX"):
        return None  # not under nbexec's pump (no private socket folder): the signal alone answers
    path = os.path.join(os.path.dirname(log_socket), f"stacks-{rank}-{os.getpid()}.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    threading.Thread(target=_answer, args=(server,), name="nbexec-stacks", daemon=True).start()
    return path


def _answer(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        try:
            conn.settimeout(5.0)
            if conn.recv(len(REQUEST)) == REQUEST:
                conn.sendall(dump_threads().encode("utf-8", errors="replace"))
        except OSError:
            pass  # the requester gave up (it falls back to the signal)
        finally:
            conn.close()


def dump_threads() -> str:
    """Every other thread's stack in faulthandler's format, the main thread last (as faulthandler writes it).

    Called with the GIL held (any Python code is): the frames read are not changing meanwhile.
    """
    me = threading.get_ident()
    main = threading.main_thread().ident
    frames = sys._current_frames()
    blocks = []
    for ident in sorted((i for i in frames if i != me), key=lambda i: i == main):
        lines = [f"Thread {thread_label(ident)} (most recent call first):"]
        frame: FrameType | None = frames[ident]
        depth = 0
        while frame is not None:
            if depth == MAX_FRAMES:
                lines.append("  ...")
                break
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno or 0} in {code.co_name}')
            frame, depth = frame.f_back, depth + 1
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _process_record(rank: int, address: str | None) -> dict[str, object]:
    """What a requester needs: which process, on which host, how to ask it, and how a dump ends."""
    return {
        "rank": rank,
        "local_rank": int(os.environ.get("LOCAL_RANK", rank)),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": start_ticks(os.getpid()),
        "socket": address,
        "signal": STACKS_SIGNAL,
        "main_thread": thread_label(threading.main_thread().ident or 0),
        "last_frame": _outermost_frame(),
    }


def _outermost_frame() -> str:
    """The line faulthandler writes last for the main thread: its outermost frame.

    The bootstrap stays in that frame for the rank's whole life (runpy calling
    the bootstrap's code); a requester knows a dump is whole once the main
    thread's block reaches it (by file and function). The main thread is the
    oldest, and faulthandler writes threads newest first: its block is last.
    """
    frame = sys._getframe()
    while frame.f_back is not None:
        frame = frame.f_back
    return f'File "{frame.f_code.co_filename}", line {frame.f_lineno} in {frame.f_code.co_name}'


def thread_label(ident: int) -> str:
    """A thread id as faulthandler writes it (``0x00007f12...``, 16 hex digits)."""
    return f"0x{ident:016x}"


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # whole or not at all: a requester never reads half of it
