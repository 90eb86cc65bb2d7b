"""The stream pump: every rank's output and the launcher's, into files and sinks.

One thread per job runs :meth:`LogPump.run`. It accepts the ranks'
connections, reads the launcher's pipes, and tails ``events.jsonl``. A rank
(the worker bootstrap) connects three times:

- ``python``: a packet socket carrying what the rank's Python code writes to
  ``sys.stdout`` and ``sys.stderr``, each packet tagged with its stream. One
  channel for both keeps them in the order the rank wrote them.
- ``stdout`` and ``stderr``: stream sockets behind file descriptors 1 and 2,
  for what bypasses Python (C/C++ code, child processes). Their order relative
  to each other, and to the packets, is the order they arrive in.

What the pump does with the bytes:

- complete lines are appended to ``logs/rank<N>.log`` (or ``logs/launcher.log``)
  as their terminal picture (``\\r`` redraws applied, see :mod:`.lines`);
  files get every line, whatever the sinks do;
- the last lines of each source are kept in a bounded tail for ``lines()``;
- lines and events are handed to a :class:`Dispatcher`, which feeds the
  sinks from its own thread through a bounded queue: a slow sink (a browser,
  a terminal) drops display lines instead of slowing the job or growing memory;
- the unfinished end of a stream (a ``\\r`` progress bar) goes to the sinks as
  a *partial* line, at most ten times a second per stream;
- tqdm-style bars of rank 0 become text progress (``on_text_progress``, and a
  progress event for the sinks), for scripts that report no progress events;
- ``events.jsonl`` is read before each batch of a rank's lines is handed on, so
  an event the trainer wrote before printing a line reaches the sinks before
  that line: a view's progress bar never lags the log it shows;
- each rank's pid (sent by its bootstrap) is kept in ``rank_pids``, for the
  resource sampler; the first rank to connect is reported as a ``phase`` event;
- once a rank has recorded its failure, torchrun's own report of it goes to
  ``launcher.log`` only: the root cause is known, its dump would only repeat it.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import nbexec.contract as contract
from nbexec.events import Event, EventTail
from nbexec.redact import Scrubber
from nbexec.runner.lines import LineSplitter, LogLine, display_text, terminal_picture
from nbexec.runner.sinks import Dispatcher
from nbexec.runner.socket_dir import make_socket_dir, remove_socket_dir
from nbexec.runner.state import PhaseName, phase_event
from nbexec.runner.textprogress import parse_progress

READ_SIZE = 1 << 16
PACKET_SIZE = 1 << 16  # the bootstrap sends at most 32 KiB (+1 tag byte) per packet
PACKETS_PER_WAKE = 64  # packets read from one connection before others get a turn
POLL_S = 0.1  # how often events.jsonl is checked and the launcher polled
# Once the launcher's pipes are closed it is exiting: poll it this often, so the
# end of the job is seen within milliseconds rather than up to POLL_S later.
EXIT_POLL_S = 0.005
DRAIN_READS = 64  # at most this many stdout reads (4 MiB) before each stderr read: see _drain_stdout
DRAIN_S = 3.0  # after the launcher exits, how long stray rank connections may stay open
PARTIAL_INTERVAL_S = 0.1  # an unfinished line is shown at most this often per stream
# An unfinished line without a \r (a prompt, a print(end="")) is shown once it has waited this long for
# its newline: in a flood, every read ends mid-line, and those halves are finished a moment later.
PARTIAL_SETTLE_S = 0.2

TAG_STREAMS = {b"o": "stdout", b"e": "stderr"}  # the packet channel's stream tags


class _Source:
    """One incoming byte stream: a rank's stdout or stderr, or a launcher pipe."""

    def __init__(self, rank: int | None, stream: str, file: _LogFile) -> None:
        self.rank = rank
        self.stream = stream
        self.file = file
        self.splitter = LineSplitter()
        self.prefix = f"[rank{rank}]: " if rank is not None else None  # torch's excepthook adds it
        self.next_partial = 0.0  # when its unfinished line may be shown again
        self.pending_since = 0.0  # when its unfinished line began (monotonic)

    def text(self, raw: bytes) -> str:
        """The display text of one of its lines (torch's redundant ``[rankN]:`` prefix dropped)."""
        text = display_text(raw)
        if self.prefix is not None and text.startswith(self.prefix):
            return text[len(self.prefix) :]
        return text


class _Packets:
    """A rank's ``python`` connection: one :class:`_Source` per stream tag."""

    def __init__(self, sources: dict[bytes, _Source]) -> None:
        self.sources = sources


class _Pending:
    """A rank connection whose header has not fully arrived yet."""

    def __init__(self, packets: bool) -> None:
        self.buf = b""
        self.packets = packets


class LogPump:
    """Moves bytes from the job to files, tails and sinks until the job is over."""

    def __init__(
        self,
        run_dir: Path,
        dispatcher: Dispatcher,
        *,
        on_events: Callable[[list[Event]], None],
        on_text_progress: Callable[[Event], None] | None = None,
        tail_lines: int = 2000,
        scrubber: Scrubber | None = None,
        on_output: Callable[[int], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.log_dir = run_dir / contract.LOG_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._dispatcher = dispatcher
        self._on_events = on_events
        self._on_text_progress = on_text_progress
        self._on_output = on_output  # told the rank of every chunk a rank sends (stall detection)
        self._tail_lines = tail_lines
        # Secret values the job knows (a token in the environment): replaced in every line it
        # prints before the line is written anywhere, as a traceback may carry one.
        self._scrubber = scrubber if scrubber else None
        # raw (stream, bytes, time): decoded only when someone reads the tail
        self._tails: dict[int | None, deque[tuple[str, bytes, float]]] = {}
        self._tails_lock = threading.Lock()
        self._files: dict[int | None, _LogFile] = {}
        self.write_error: tuple[Path, OSError] | None = None  # the first log file that could not be written
        self._events = EventTail(run_dir / contract.EVENTS_FILE)
        self._selector = selectors.DefaultSelector()
        # Short private paths: unix socket paths are limited to ~107 bytes. The folder names its
        # owner, so one a killed process left is removed by the next (see .socket_dir).
        self._socket_dir = make_socket_dir()
        self.socket_path = os.path.join(self._socket_dir, "logs.sock")
        self.packet_socket_path: str | None = os.path.join(self._socket_dir, "py.sock")
        self._server = self._listen(socket.SOCK_STREAM, self.socket_path, "server")
        try:
            self._packet_server: socket.socket | None = self._listen(
                socket.SOCK_SEQPACKET, self.packet_socket_path, "packet-server"
            )
        except (AttributeError, OSError):  # no SOCK_SEQPACKET (not Linux): Python writes go to fds 1 and 2
            self._packet_server, self.packet_socket_path = None, None
        self._open_conns = 0
        self._open_pipes = 0
        self._stdout_of: dict[int | None, Any] = {}  # rank (None: the launcher) -> its stdout socket or pipe
        self._dirty: dict[int, _Source] = {}  # sources whose unfinished line changed, by id
        self.ranks_seen: set[int] = set()
        self.rank_pids: dict[int, int] = {}  # rank -> its process id, as its bootstrap sent it
        self.failed_ranks: list[int] = []  # ranks that recorded a failure, in the order seen
        self.launcher_lines_hidden = 0  # torchrun's lines kept out of the sinks (they are in launcher.log)

    def _listen(self, kind: int, path: str, tag: str) -> socket.socket:
        server = socket.socket(socket.AF_UNIX, kind)
        server.bind(path)
        server.listen(256)
        server.setblocking(False)
        self._selector.register(server, selectors.EVENT_READ, tag)
        return server

    # --- public -----------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        """The variables that tell the ranks' bootstrap where to send their output."""
        env = {contract.ENV_LOG_SOCKET: self.socket_path}
        if self.packet_socket_path is not None:
            env[contract.ENV_LOG_PACKETS] = self.packet_socket_path
        return env

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
        prefix = f"[rank{rank}]: " if rank is not None else None
        out = []
        for stream, data, t in raw:
            text = display_text(data)
            if prefix is not None and text.startswith(prefix):
                text = text[len(prefix) :]
            out.append(LogLine(rank, stream, text, t))
        return out

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
                if self._dirty:
                    self._show_partials(now)
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
        data = key.data
        if data == "server":
            self._accept(self._server, packets=False)
        elif data == "packet-server":
            assert self._packet_server is not None
            self._accept(self._packet_server, packets=True)
        elif isinstance(data, _Pending):
            self._read_header(key)
        elif isinstance(data, _Packets):
            self._read_packets(key)
        else:
            self._read(key)

    def _accept(self, server: socket.socket, *, packets: bool) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, _Pending(packets))
            self._open_conns += 1

    def _read_header(self, key: selectors.SelectorKey) -> None:
        conn: socket.socket = key.fileobj  # type: ignore[assignment]
        pending: _Pending = key.data
        chunk = self._recv(conn, PACKET_SIZE if pending.packets else READ_SIZE)
        if chunk is None:
            return
        if not chunk:
            self._drop(conn, is_conn=True)
            return
        if pending.packets:  # the first packet is the header, whole
            header, rest = chunk, b""
        else:
            pending.buf += chunk
            header, sep, rest = pending.buf.partition(b"\n")
            if not sep:
                return
        try:
            info = json.loads(header)
            rank, stream = int(info["rank"]), str(info["stream"])
        except (ValueError, KeyError, TypeError):
            rank, stream, info = -1, "stderr", {}  # unknown peer: keep its bytes anyway
        if not self.ranks_seen:
            self._publish_events([phase_event(PhaseName.STARTING, "ranks started, importing the script") | {
                "source": "parent", "rank": None}])
        self.ranks_seen.add(rank)
        pid = info.get("pid") if isinstance(info, dict) else None
        if isinstance(pid, int) and rank >= 0:
            self.rank_pids[rank] = pid
        if pending.packets:
            sources = {tag: _Source(rank, name, self._file(rank)) for tag, name in TAG_STREAMS.items()}
            self._selector.modify(conn, selectors.EVENT_READ, _Packets(sources))
            return
        source = _Source(rank, stream, self._file(rank))
        self._selector.modify(conn, selectors.EVENT_READ, source)
        if stream == "stdout":
            self._stdout_of[rank] = conn
        if rest:
            self._consume(source, rest)

    def _read_packets(self, key: selectors.SelectorKey) -> None:
        conn: socket.socket = key.fileobj  # type: ignore[assignment]
        packets: _Packets = key.data
        for _ in range(PACKETS_PER_WAKE):
            packet = self._recv(conn, PACKET_SIZE)
            if packet is None:
                return
            if not packet:  # the rank closed it (a packet always carries its tag byte)
                for source in packets.sources.values():
                    self._emit(source, source.splitter.flush())
                self._drop(conn, is_conn=True)
                return
            tagged = packets.sources.get(packet[:1])
            if tagged is not None:
                self._consume(tagged, packet[1:])

    def _read(self, key: selectors.SelectorKey) -> None:
        source: _Source = key.data
        if source.stream == "stderr":
            self._drain_stdout(source.rank)
        self._read_once(key.fileobj, source)

    def _read_once(self, obj: Any, source: _Source) -> bool:
        """One read of a source into its file; False when nothing was waiting or it closed."""
        is_conn = isinstance(obj, socket.socket)
        chunk = self._recv(obj, READ_SIZE) if is_conn else _read_pipe(obj)
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

        For the streams behind fds 1 and 2 (C code, child processes, the
        launcher): a process writes stdout before stderr (a print, then a
        traceback), but the two reach the pump on separate sockets (pipes for
        the launcher), so stderr can be readable while an earlier stdout
        backlog is still queued. Reading that backlog first keeps the rank file
        in the order the rank wrote. The drain is bounded (what a socket
        buffer holds): a rank flooding stdout cannot keep its stderr from
        being read. Python-level writes do not need this: they share one channel.
        """
        obj = self._stdout_of.get(rank)
        if obj is None:
            return
        source = self._selector.get_key(obj).data
        for _ in range(DRAIN_READS):
            if not self._read_once(obj, source):
                return

    def _consume(self, source: _Source, chunk: bytes) -> None:
        if self._on_output is not None and source.rank is not None:
            self._on_output(source.rank)
        had_pending = bool(source.splitter.pending)
        finished = source.splitter.feed(chunk)
        self._emit(source, finished)
        if source.splitter.pending:
            if finished or not had_pending:
                source.pending_since = time.monotonic()
            self._dirty[id(source)] = source

    def _emit(self, source: _Source, raw_lines: list[bytes]) -> None:
        if not raw_lines:
            return
        if source.rank is not None:
            # What the rank wrote to events.jsonl before printing these lines goes to the sinks
            # first (one read when there is nothing new): a progress bar never lags the log.
            self._poll_events()
        if any(b"\r" in r for r in raw_lines):
            raw_lines = [terminal_picture(r) for r in raw_lines]
        data = b"\n".join(raw_lines)
        if self._scrubber is not None:
            clean = self._scrubber.raw(data)
            if clean is not data:
                data, raw_lines = clean, clean.split(b"\n")
        source.file.write(data + b"\n")
        now = time.time()
        with self._tails_lock:
            tail = self._tails.get(source.rank)
            if tail is None:
                tail = self._tails[source.rank] = deque(maxlen=self._tail_lines)
            stream = source.stream
            tail.extend((stream, r, now) for r in raw_lines[-self._tail_lines :])
        if source.rank == 0 and self._on_text_progress is not None:
            self._text_progress(raw_lines[-1], now)
        if source.rank is None and self._rank_failure_known():
            self.launcher_lines_hidden += len(raw_lines)
            return
        if self._dispatcher.wants_lines:
            self._dispatcher.put_lines([LogLine(source.rank, stream, source.text(r), now) for r in raw_lines])

    def _show_partials(self, now: float) -> None:
        """Hand the sinks the unfinished line of each stream that changed, at most every PARTIAL_INTERVAL_S."""
        due = [
            s for s in self._dirty.values()
            if now >= s.next_partial and (b"\r" in s.splitter.pending or now - s.pending_since >= PARTIAL_SETTLE_S)
        ]
        if not due:
            return
        partials = []
        wall = time.time()
        for source in due:
            del self._dirty[id(source)]
            pending = source.splitter.pending
            if not pending:
                continue  # finished since: the whole line went out already
            source.next_partial = now + PARTIAL_INTERVAL_S
            if source.rank == 0 and self._on_text_progress is not None:
                self._text_progress(pending, wall)
            if source.rank is None and self._rank_failure_known():
                continue
            text = source.text(pending)
            if self._scrubber is not None:
                text = self._scrubber.text(text)
            partials.append(LogLine(source.rank, source.stream, text, wall, partial=True))
        if partials and self._dispatcher.wants_lines:
            self._dispatcher.put_partial(partials)

    def _text_progress(self, raw: bytes, now: float) -> None:
        if b"/" not in raw:  # every bar has "n/total"; most lines are not bars
            return
        progress = parse_progress(display_text(raw))
        if progress is not None and self._on_text_progress is not None:
            progress.update(time=now, rank=0)
            self._on_text_progress(progress)
            self._dispatcher.put_events([progress])  # in order with the bar's line, for the views

    def _rank_failure_known(self) -> bool:
        """Whether a rank has recorded its failure (its event comes before the rank exits)."""
        if not self.failed_ranks:
            self._poll_events()
        return bool(self.failed_ranks)

    def _poll_events(self) -> None:
        events = self._events.read_new()
        if events:
            for ev in events:
                if ev.get("kind") == "failure" and isinstance(ev.get("rank"), int):
                    self.failed_ranks.append(ev["rank"])
            self._publish_events(events)

    def _publish_events(self, events: list[Event]) -> None:
        """To the run (``on_events``) and the sinks."""
        self._on_events(events)
        self._dispatcher.put_events(events)

    @staticmethod
    def _recv(conn: socket.socket, size: int) -> bytes | None:
        try:
            return conn.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _drop(self, obj: Any, *, is_conn: bool) -> None:
        data = self._selector.unregister(obj).data
        sources = data.sources.values() if isinstance(data, _Packets) else [data]
        for source in sources:
            if isinstance(source, _Source):
                self._dirty.pop(id(source), None)
                if self._stdout_of.get(source.rank) is obj:
                    del self._stdout_of[source.rank]
        obj.close()
        if is_conn:
            self._open_conns -= 1
        else:
            self._open_pipes -= 1

    def _file(self, rank: int | None) -> _LogFile:
        f = self._files.get(rank)
        if f is None:
            path = (
                self.log_dir / contract.LAUNCHER_LOG
                if rank is None
                else contract.rank_log_path(self.run_dir, rank)
            )
            f = self._files[rank] = _LogFile(path, self._write_failed)
        return f

    def _write_failed(self, path: Path, err: OSError) -> None:
        """A log file cannot be written (a full disk): say so once; the job and its display go on."""
        if self.write_error is None:
            self.write_error = (path, err)
        reason = os.strerror(err.errno) if err.errno else str(err)
        note = (f"nbexec: cannot write {path}: {reason}; the job goes on, its output is shown but not "
                "saved there")
        self._dispatcher.put_lines([LogLine(None, "stderr", note, time.time())])

    def _flush_files(self) -> None:
        for f in self._files.values():
            f.flush()

    def _close(self) -> None:
        self._poll_events()
        for key in list(self._selector.get_map().values()):
            data = key.data
            sources = data.sources.values() if isinstance(data, _Packets) else [data]
            for source in sources:
                if isinstance(source, _Source):
                    self._emit(source, source.splitter.flush())
            self._selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self._events.close()
        for f in self._files.values():
            f.close()
        remove_socket_dir(self._socket_dir)


class _LogFile:
    """A log file of the run dir. A write that fails (no space left) is reported once; later ones are skipped,
    so a full disk never stops the pump from reading the job (which would block or kill its ranks)."""

    def __init__(self, path: Path, on_error: Callable[[Path, OSError], None]) -> None:
        self.path = path
        self._on_error = on_error
        self._fh: IO[bytes] | None
        try:
            self._fh = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as err:
            self._fh = None
            on_error(path, err)

    def write(self, data: bytes) -> None:
        if self._fh is not None:
            try:
                self._fh.write(data)
            except OSError as err:
                self._fail(err)

    def flush(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError as err:
                self._fail(err)

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as err:
                self._fail(err)
            self._fh = None

    def _fail(self, err: OSError) -> None:
        fh, self._fh = self._fh, None
        self._on_error(self.path, err)
        try:
            if fh is not None:
                fh.close()  # its buffer cannot be written either
        except OSError:
            pass


def _read_pipe(fileobj: IO[bytes]) -> bytes | None:
    try:
        return os.read(fileobj.fileno(), READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None


__all__: Sequence[str] = ["LogPump"]
