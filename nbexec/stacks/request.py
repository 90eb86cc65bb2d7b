"""The requester's side of stacks on demand: ask ranks, read back their dumps.

Each rank recorded itself when its hook was installed (:mod:`.hook`). A request
for rank N:

1. reads ``logs/rank<N>.process.json`` and checks the process is that one
   (alive, same start time, on this host);
2. takes an exclusive lock on ``logs/rank<N>.stacks`` (two requesters, say a
   notebook and ``nbexec stacks`` in a terminal, take turns) and appends a
   marker line;
3. asks the rank's answering thread on its unix socket and reads the answer to
   its end, then appends it to the file after the marker;
4. only if the thread does not answer within :data:`THREAD_WAIT_S` (the rank
   holds the GIL, stuck in C code), sends the signal, if the rank handles it
   (``SigCgt``: no other process ever gets it), and reads what faulthandler
   appends until the dump is whole: the main thread's block (written last)
   has reached its outermost frame, or was cut by faulthandler's own limit
   (100 frames). A dump not whole by the deadline comes back as far as it
   got, marked incomplete.

Ranks are signalled together and waited for together, so asking 8 ranks
takes about as long as asking one. Standard library only: the worker
bootstrap uses it too (a rank whose collective timed out asks its peers).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbexec.contract as contract
from nbexec.stacks.hook import REQUEST, start_ticks

_FRAME_RE = re.compile(r'^File "(.*)", line \d+ in (.*)$')
MARKER = "=== nbexec stacks"  # "=== nbexec stacks <token> <unix time> <requester pid>"
DUMP_TIMEOUT_S = 5.0  # how long a request waits for a dump to be whole
THREAD_WAIT_S = 1.0  # how long the rank's answering thread has before the signal is sent instead
POLL_S = 0.002


@dataclass(frozen=True)
class RankProcess:
    """A rank's process record (``logs/rank<N>.process.json``)."""

    rank: int
    pid: int
    host: str
    signal: int
    main_thread: str
    last_frame: str
    start_ticks: int | None = None
    local_rank: int | None = None
    socket: str | None = None  # the answering thread's unix socket

    @classmethod
    def read(cls, path: Path) -> RankProcess | None:
        try:
            data = json.loads(path.read_text())
            return cls(rank=int(data["rank"]), pid=int(data["pid"]), host=str(data["host"]),
                       signal=int(data["signal"]), main_thread=str(data["main_thread"]),
                       last_frame=str(data["last_frame"]), start_ticks=data.get("start_ticks"),
                       local_rank=data.get("local_rank"), socket=data.get("socket"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def problem(self) -> str | None:
        """Why this process cannot be asked for its stacks now, or None."""
        if self.host != socket.gethostname():
            return f"rank {self.rank} runs on {self.host}; take its stacks there (nbexec stacks RUN_DIR)"
        if not _pid_alive(self.pid):
            return f"rank {self.rank} (pid {self.pid}) is not running"
        if self.start_ticks is not None and start_ticks(self.pid) not in (self.start_ticks, None):
            return f"rank {self.rank} (pid {self.pid}) is not running (its pid belongs to another process now)"
        return None

    def signal_problem(self) -> str | None:
        """Why the signal must not be sent to this process (it would not handle it), or None."""
        if _signal_caught(self.pid, self.signal) is False:
            return (f"rank {self.rank} (pid {self.pid}) does not handle the stacks signal "
                    f"({self.signal}) now: its script replaced nbexec's hook, or it is exiting")
        return None


@dataclass(frozen=True)
class RawDump:
    """What one rank wrote for one request.

    Attributes:
        text: faulthandler's dump (empty when there is none).
        complete: the dump is whole (its main thread reached its outermost frame).
        error: why there is no dump (the rank is not running...), else "".
    """

    rank: int
    pid: int | None
    text: str
    taken_at: float
    complete: bool
    error: str = ""
    main_thread: str = ""


def rank_processes(run_dir: Path) -> dict[int, RankProcess]:
    """Every rank that recorded a hook in ``run_dir``, by rank."""
    found = {}
    for path in (Path(run_dir) / contract.LOG_DIR).glob(contract.RANK_PROCESS_GLOB):
        record = RankProcess.read(path)
        if record is not None:
            found[record.rank] = record
    return dict(sorted(found.items()))


def request_dumps(run_dir: Path, ranks: Iterable[int] | None = None, *,
                  timeout: float = DUMP_TIMEOUT_S) -> dict[int, RawDump]:
    """Ask ranks for their stacks now and wait for the dumps (bounded by ``timeout``).

    Args:
        run_dir: the job's run directory.
        ranks: which ranks (None: every rank that recorded a hook).
        timeout: seconds to wait for all the dumps together.

    Returns:
        A dump per rank asked for, in rank order; never raises for one rank's problem
        (it is in that dump's ``error``).
    """
    run_dir = Path(run_dir)
    processes = rank_processes(run_dir)
    wanted = sorted(processes) if ranks is None else sorted(set(ranks))
    deadline = time.monotonic() + timeout
    pending: dict[int, _Request] = {}
    out: dict[int, RawDump] = {}
    try:
        for rank in wanted:
            record = processes.get(rank)
            if record is None:
                out[rank] = RawDump(rank, None, "", time.time(), False,
                                    f"rank {rank} has not recorded a stacks hook (not started yet, not an nbexec "
                                    f"rank, or NBEXEC_STACKS=0); no {contract.rank_process_path(run_dir, rank).name}")
                continue
            problem = record.problem()
            if problem is not None:
                out[rank] = RawDump(rank, record.pid, "", time.time(), False, problem, record.main_thread)
                continue
            try:
                pending[rank] = _Request.send(run_dir, record, deadline)
            except OSError as err:
                out[rank] = RawDump(rank, record.pid, "", time.time(), False,
                                    f"rank {rank} (pid {record.pid}) could not be asked: {err}", record.main_thread)
        while pending:
            for rank, request in list(pending.items()):
                if request.poll():
                    out[rank] = request.finish()
                    del pending[rank]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        for rank, request in pending.items():  # not whole in time: as far as it got
            out[rank] = request.finish(timed_out=timeout)
        pending.clear()
    finally:
        for request in pending.values():
            request.close()
    return dict(sorted(out.items()))


class _Request:
    """One rank's request in flight: the lock held, the marker written, the rank asked.

    Asked on its socket first; by the signal when the socket does not answer in time.
    """

    def __init__(self, record: RankProcess, fd: int, taken_at: float) -> None:
        self.record = record
        self.fd = fd
        self.taken_at = taken_at
        self.sock: socket.socket | None = None
        self.answer = b""  # what the thread sent so far
        self.give_up_on_thread = 0.0  # monotonic: then the signal instead
        self.offset: int | None = None  # where faulthandler's dump starts in the file (signal sent)
        self.text = ""
        self.error = ""

    @classmethod
    def send(cls, run_dir: Path, record: RankProcess, deadline: float) -> _Request:
        path = contract.rank_stacks_path(run_dir, record.rank)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _lock(fd, deadline)
            taken_at = time.time()
            os.write(fd, f"{MARKER} {uuid.uuid4().hex} {taken_at:.3f} {os.getpid()}\n".encode())
            request = cls(record, fd, taken_at)
            if not request._ask_thread(deadline):
                request._signal()
        except BaseException:
            os.close(fd)
            raise
        return request

    def _ask_thread(self, deadline: float) -> bool:
        if not self.record.socket:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.05, min(THREAD_WAIT_S, deadline - time.monotonic())))
            sock.connect(self.record.socket)
            sock.sendall(REQUEST)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self.sock = sock
        self.give_up_on_thread = time.monotonic() + THREAD_WAIT_S
        return True

    def _signal(self) -> None:
        self._close_sock()
        problem = self.record.signal_problem()
        if problem is not None:
            self.error = problem
            return
        self.offset = os.lseek(self.fd, 0, os.SEEK_END)
        os.kill(self.record.pid, self.record.signal)

    def poll(self) -> bool:
        """Read what the rank sent or wrote so far; True once the dump is whole (or cannot come)."""
        if self.error:
            return True
        if self.sock is not None:
            return self._poll_thread()
        assert self.offset is not None
        chunk = os.pread(self.fd, 1 << 20, self.offset + len(self.text.encode()))
        if chunk:
            self.text += chunk.decode("utf-8", errors="replace")
        return dump_is_whole(self.text, self.record.main_thread, self.record.last_frame)

    def _poll_thread(self) -> bool:
        assert self.sock is not None
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                if time.monotonic() >= self.give_up_on_thread:  # the GIL stays taken: faulthandler instead
                    self._signal()
                return False
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.answer += chunk
        self._close_sock()
        if not self.answer:  # closed without an answer (a rank exiting): the signal tells
            self._signal()
            return bool(self.error)
        self.text = self.answer.decode("utf-8", errors="replace")
        os.write(self.fd, self.answer if self.answer.endswith(b"\n") else self.answer + b"\n")
        return True

    def finish(self, timed_out: float | None = None) -> RawDump:
        self.close()
        error = self.error
        if timed_out is not None and not error:
            error = (f"rank {self.record.rank} (pid {self.record.pid}) did not finish its dump within "
                     f"{timed_out:g} s" + ("" if self.text else ": it wrote nothing"))
        complete = timed_out is None and not error
        return RawDump(self.record.rank, self.record.pid, self.text, self.taken_at, complete, error,
                       self.record.main_thread)

    def _close_sock(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self._close_sock()
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


def dump_is_whole(text: str, main_thread: str, last_frame: str) -> bool:
    """Whether a faulthandler dump is complete: the main thread's block (the last) has ended.

    It ends with the main thread's outermost frame (``last_frame``: its file and
    function; the line may differ from the one recorded), or with faulthandler's
    ``...`` when it cut a deep stack.
    """
    outermost = _FRAME_RE.match(last_frame)
    for header in (f"Current thread {main_thread} ", f"Thread {main_thread} "):
        at = text.find(header)
        if at < 0:
            continue
        block = text[at:]
        if not block.endswith("\n"):
            return False
        tail = block[block.rstrip("\n").rfind("\n") + 1 :]
        if tail == "  ...\n":
            return True
        return outermost is not None and tail.startswith(f'  File "{outermost.group(1)}", line ') \
            and tail.endswith(f" in {outermost.group(2)}\n")
    return False


def split_dumps(text: str) -> list[tuple[float, str]]:
    """The dumps in a ``rank<N>.stacks`` file: ``(time requested, dump text)``, oldest first."""
    out: list[tuple[float, str]] = []
    for part in text.split(MARKER + " ")[1:]:
        head, _, body = part.partition("\n")
        fields = head.split()
        try:
            taken = float(fields[1])
        except (IndexError, ValueError):
            continue
        out.append((taken, body))
    return out


def _lock(fd: int, deadline: float) -> None:
    """An exclusive lock on the rank's dump file, waiting for another requester until ``deadline``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one requester at a time is then up to the user
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError("another request for this rank's stacks is still in progress") from None
            time.sleep(POLL_S)


def _signal_caught(pid: int, signum: int) -> bool | None:
    """Whether ``pid`` has a handler for ``signum`` (/proc/<pid>/status SigCgt); None when unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a rank that exited but torchrun has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

