"""The stream pump: every rank's output and the launcher's, into files and sinks.

One thread per job runs :meth:`LogPump.run`. It accepts the ranks'
connections on a unix socket (the worker bootstrap connects stdout and stderr
separately), reads the launcher's pipes, and tails ``events.jsonl``:

- complete lines are appended, raw, to ``logs/rank<N>.log`` (or
  ``logs/launcher.log``) — files get every line, whatever the sinks do;
- the last lines of each source are kept in a bounded tail for ``lines()``;
- lines and events are handed to a :class:`Dispatcher`, which feeds the
  sinks from its own thread through a bounded queue: a slow sink (a browser,
  a terminal) drops display lines instead of slowing the job or growing memory.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from nbexec import contract
from nbexec.events import Event, EventTail
from nbexec.runner.lines import LineSplitter, LogLine, display_text
from nbexec.runner.sinks import Dispatcher

READ_SIZE = 1 << 16
POLL_S = 0.1  # how often events.jsonl is checked and the launcher polled
# Once the launcher's pipes are closed it is exiting: poll it this often, so the
# end of the job is seen within milliseconds rather than up to POLL_S later.
EXIT_POLL_S = 0.005
DRAIN_READS = 64  # at most this many stdout reads (4 MiB) before each stderr read: see _drain_stdout
DRAIN_S = 3.0  # after the launcher exits, how long stray rank connections may stay open


class _Source:
    """One incoming byte stream: a rank's stdout or stderr, or a launcher pipe."""

    def __init__(self, rank: int | None, stream: str, file: IO[bytes]) -> None:
        self.rank = rank
        self.stream = stream
        self.file = file
        self.splitter = LineSplitter()


class _Pending:
    """A rank connection whose header line has not fully arrived yet."""

    def __init__(self) -> None:
        self.buf = b""


class LogPump:
    """Moves bytes from the job to files, tails and sinks until the job is over."""

    def __init__(
        self,
        run_dir: Path,
        dispatcher: Dispatcher,
        *,
        on_events: Callable[[list[Event]], None],
        tail_lines: int = 2000,
    ) -> None:
        self.run_dir = run_dir
        self.log_dir = run_dir / contract.LOG_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._dispatcher = dispatcher
        self._on_events = on_events
        self._tail_lines = tail_lines
        # raw (stream, bytes, time): decoded only when someone reads the tail
        self._tails: dict[int | None, deque[tuple[str, bytes, float]]] = {}
        self._tails_lock = threading.Lock()
        self._files: dict[int | None, IO[bytes]] = {}
        self._events = EventTail(run_dir / contract.EVENTS_FILE)
        self._selector = selectors.DefaultSelector()
        # A short private path: unix socket paths are limited to ~107 bytes.
        self._socket_dir = tempfile.mkdtemp(prefix="nbexec-")
        self.socket_path = os.path.join(self._socket_dir, "logs.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.socket_path)
        self._server.listen(256)
        self._server.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ, "server")
        self._open_conns = 0
        self._open_pipes = 0
        self._stdout_of: dict[int | None, Any] = {}  # rank (None: the launcher) -> its stdout socket or pipe
        self.ranks_seen: set[int] = set()

    # --- public -----------------------------------------------------------

    def attach_pipe(self, fileobj: IO[bytes], stream: str) -> None:
        """Read one of the launcher's pipes (its own stdout or stderr)."""
        os.set_blocking(fileobj.fileno(), False)
        self._selector.register(fileobj, selectors.EVENT_READ, _Source(None, stream, self._file(None)))
        self._open_pipes += 1
        if stream == "stdout":
            self._stdout_of[None] = fileobj

    def lines(self, rank: int | None) -> list[LogLine]:
        with self._tails_lock:
            raw = list(self._tails.get(rank, ()))
        return [LogLine(rank, stream, display_text(data), t) for stream, data, t in raw]

    def log_paths(self) -> dict[str, Path]:
        out = {f"rank{r}": contract.rank_log_path(self.run_dir, r) for r in sorted(self.ranks_seen)}
        out["launcher"] = self.log_dir / contract.LAUNCHER_LOG
        return out

    def run(self, launcher_exited: Callable[[], bool]) -> None:
        """Pump until the launcher has exited and every stream is drained."""
        drain_deadline: float | None = None
        next_poll = 0.0
        try:
            while True:
                for key, _ in self._selector.select(timeout=POLL_S if self._open_pipes else EXIT_POLL_S):
                    if self._selector.get_map().get(key.fd) is key:  # not closed earlier in this round
                        self._handle(key)
                now = time.monotonic()
                if now >= next_poll:  # files are readable live, at most POLL_S behind
                    next_poll = now + POLL_S
                    self._poll_events()
                    self._flush_files()
                if self._open_pipes == 0 and launcher_exited():
                    if self._open_conns == 0:
                        break
                    # A rank's child process (e.g. a stray server) may hold the
                    # socket open forever; the job is over, stop waiting for it.
                    drain_deadline = drain_deadline or now + DRAIN_S
                    if now >= drain_deadline:
                        break
        finally:
            self._close()

    # --- internals ----------------------------------------------------------

    def _handle(self, key: selectors.SelectorKey) -> None:
        if key.data == "server":
            self._accept()
        elif isinstance(key.data, _Pending):
            self._read_header(key)
        else:
            self._read(key)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, _Pending())
            self._open_conns += 1

    def _read_header(self, key: selectors.SelectorKey) -> None:
        conn: socket.socket = key.fileobj  # type: ignore[assignment]
        pending: _Pending = key.data
        chunk = self._recv(conn)
        if not chunk:
            self._drop(conn, is_conn=True)
            return
        pending.buf += chunk
        header, sep, rest = pending.buf.partition(b"\n")
        if not sep:
            return
        try:
            info = json.loads(header)
            rank, stream = int(info["rank"]), str(info["stream"])
        except (ValueError, KeyError, TypeError):
            rank, stream = -1, "stderr"  # unknown peer: keep its bytes anyway
        self.ranks_seen.add(rank)
        source = _Source(rank, stream, self._file(rank))
        self._selector.modify(conn, selectors.EVENT_READ, source)
        if stream == "stdout":
            self._stdout_of[rank] = conn
        if rest:
            self._consume(source, rest)

    def _read(self, key: selectors.SelectorKey) -> None:
        source: _Source = key.data
        if source.stream == "stderr":
            self._drain_stdout(source.rank)
        self._read_once(key.fileobj, source)

    def _read_once(self, obj: Any, source: _Source) -> bool:
        """One read of a source into its file; False when nothing was waiting or it closed."""
        is_conn = isinstance(obj, socket.socket)
        chunk = self._recv(obj) if is_conn else _read_pipe(obj)
        if chunk is None:
            return False
        if not chunk:
            self._emit(source, source.splitter.flush())
            self._drop(obj, is_conn=is_conn)
            return False
        self._consume(source, chunk)
        return True

    def _drain_stdout(self, rank: int | None) -> None:
        """Before a stderr read: take what already waits on the same rank's stdout.

        A process writes stdout before stderr (a print, then a traceback), but the
        two reach the pump on separate sockets (pipes for the launcher), so stderr
        can be readable while an earlier stdout backlog is still queued. Reading
        that backlog first keeps the rank file in the order the rank wrote. The
        drain is bounded (what a socket buffer holds): a rank flooding stdout
        cannot keep its stderr from being read.
        """
        obj = self._stdout_of.get(rank)
        if obj is None:
            return
        source = self._selector.get_key(obj).data
        for _ in range(DRAIN_READS):
            if not self._read_once(obj, source):
                return

    def _consume(self, source: _Source, chunk: bytes) -> None:
        self._emit(source, source.splitter.feed(chunk))

    def _emit(self, source: _Source, raw_lines: list[bytes]) -> None:
        if not raw_lines:
            return
        source.file.write(b"\n".join(raw_lines) + b"\n")
        now = time.time()
        with self._tails_lock:
            tail = self._tails.get(source.rank)
            if tail is None:
                tail = self._tails[source.rank] = deque(maxlen=self._tail_lines)
            stream = source.stream
            tail.extend((stream, r, now) for r in raw_lines[-self._tail_lines :])
        if self._dispatcher.wants_lines:
            self._dispatcher.put_lines(
                [LogLine(source.rank, source.stream, display_text(r), now) for r in raw_lines]
            )

    def _poll_events(self) -> None:
        events = self._events.read_new()
        if events:
            self._on_events(events)
            self._dispatcher.put_events(events)

    @staticmethod
    def _recv(conn: socket.socket) -> bytes | None:
        try:
            return conn.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _drop(self, obj: Any, *, is_conn: bool) -> None:
        source = self._selector.unregister(obj).data
        if isinstance(source, _Source) and self._stdout_of.get(source.rank) is obj:
            del self._stdout_of[source.rank]
        obj.close()
        if is_conn:
            self._open_conns -= 1
        else:
            self._open_pipes -= 1

    def _file(self, rank: int | None) -> IO[bytes]:
        f = self._files.get(rank)
        if f is None:
            path = (
                self.log_dir / contract.LAUNCHER_LOG
                if rank is None
                else contract.rank_log_path(self.run_dir, rank)
            )
            f = self._files[rank] = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - closed in _close
        return f

    def _flush_files(self) -> None:
        for f in self._files.values():
            f.flush()

    def _close(self) -> None:
        self._poll_events()
        for key in list(self._selector.get_map().values()):
            source = key.data
            if isinstance(source, _Source):
                self._emit(source, source.splitter.flush())
            self._selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _read_pipe(fileobj: IO[bytes]) -> bytes | None:
    try:
        return os.read(fileobj.fileno(), READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None


__all__: Sequence[str] = ["LogPump"]
