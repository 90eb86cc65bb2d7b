"""The rank's side of stacks on demand: a stack-dump hook installed by the worker bootstrap.

``faulthandler.register(signal, all_threads=True, file=...)`` makes the rank
write the Python stack of every thread when it gets :data:`STACKS_SIGNAL`.
faulthandler writes from the C signal handler itself, so the dump comes even
when the main thread is blocked in C code (a collective, a lock, a read) or
holds the GIL, and it costs the rank nothing until asked: no thread, no
polling, one open file.

The dumps go to ``logs/rank<N>.stacks``, not to the rank's stdout or stderr:
those are the user's log (a dump there would be mixed into their lines and
shown as if the script printed it), and a file of its own lets the requester
find each dump by offset, after its marker line. Only file names, line numbers
and function names are written: no local variable values.

Once the hook is in place, the rank writes ``logs/rank<N>.process.json``
(pid, host, the signal, what its last line looks like): a requester signals
only a process that has recorded a hook, so a rank is never killed by a
signal it does not handle.

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
from typing import IO

import nbexec.contract as contract

# A real-time signal: none of the common ones is free of other owners (SIGUSR1 is Slurm's and
# Lightning's requeue signal, SIGUSR2 submitit's). Requesters read it from the process record.
STACKS_SIGNAL = int(signal.SIGRTMIN) + 6 if hasattr(signal, "SIGRTMIN") else int(signal.SIGUSR2)

_dump_file: IO[bytes] | None = None  # kept open for the rank's life (faulthandler writes to its fd)


def install(run_dir: Path, rank: int) -> str | None:
    """Install the hook and record this process; returns why not, or None when installed.

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
        _write_json(contract.rank_process_path(run_dir, rank), _process_record(rank))
    except (OSError, ValueError, RuntimeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _process_record(rank: int) -> dict[str, object]:
    """What a requester needs: which process, on which host, which signal, and how a dump ends."""
    return {
        "rank": rank,
        "local_rank": int(os.environ.get("LOCAL_RANK", rank)),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": start_ticks(os.getpid()),
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
