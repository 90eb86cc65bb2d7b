"""Stream a run directory's log files and events as a job on other machines writes them.

The counterpart of :class:`nbexec.runner.streams.LogPump` for a job nbexec
did not spawn here (a Slurm job): the job's nodes write ``logs/rank<N>.log``
and ``events.jsonl`` (on a shared file system); this pump tails them into the
same tails and sinks, so ``lines()``, the notebook view and the terminal
work as for a local run. Lines of a rank log are reported as ``stdout``
(the file holds both streams).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import nbexec.contract as contract
from nbexec.events import Event, EventTail
from nbexec.runner.lines import LineSplitter, LogLine, display_text
from nbexec.runner.sinks import Dispatcher

POLL_S = 0.2
READ_SIZE = 1 << 20


class _Tailed:
    def __init__(self, path: Path, rank: int | None, stream: str) -> None:
        self.path = path
        self.rank = rank
        self.stream = stream
        self.offset = 0
        self.splitter = LineSplitter()


class FileTailPump:
    """Tails the log files under ``dirs()`` and ``events.jsonl`` until the job is over.

    Args:
        run_dir: node 0's run dir (its ``events.jsonl`` is the job's).
        dispatcher: feeds the sinks.
        on_events: called with each batch of new events.
        dirs: the run dirs to tail (node 0's and the other nodes'), re-read each poll.
        launcher_files: extra files whose lines belong to no rank (the batch script's output).
    """

    def __init__(
        self,
        run_dir: Path,
        dispatcher: Dispatcher,
        *,
        on_events: Callable[[list[Event]], None],
        dirs: Callable[[], Iterable[Path]],
        launcher_files: Callable[[], Iterable[Path]] = lambda: (),
        tail_lines: int = 2000,
    ) -> None:
        self.run_dir = run_dir
        self._dispatcher = dispatcher
        self._on_events = on_events
        self._dirs = dirs
        self._launcher_files = launcher_files
        self._tail_lines = tail_lines
        self._tails: dict[int | None, deque[LogLine]] = {}
        self._lock = threading.Lock()
        self._files: dict[Path, _Tailed] = {}
        self._events = EventTail(run_dir / contract.EVENTS_FILE)
        self.ranks_seen: set[int] = set()

    def lines(self, rank: int | None) -> list[LogLine]:
        with self._lock:
            return list(self._tails.get(rank, ()))

    def log_paths(self) -> dict[str, Path]:
        out = {f"rank{t.rank}": t.path for t in self._files.values() if t.rank is not None}
        out = dict(sorted(out.items(), key=lambda kv: int(kv[0][4:])))
        out["launcher"] = self.run_dir / contract.LOG_DIR / contract.LAUNCHER_LOG
        return out

    def run(self, job_over: Callable[[], bool]) -> None:
        """Poll the files every 0.2 s; after ``job_over()`` turns true, read them one last time."""
        while True:
            over = job_over()
            self.poll()
            if over:
                self.finish()
                return
            time.sleep(POLL_S)

    def poll(self) -> None:
        self._discover()
        for tailed in list(self._files.values()):
            self._read(tailed)
        events = self._events.read_new()
        if events:
            self._on_events(events)
            self._dispatcher.put_events(events)

    def finish(self) -> None:
        self.poll()
        for tailed in self._files.values():
            self._emit(tailed, tailed.splitter.flush())

    def _discover(self) -> None:
        for run_dir in self._dirs():
            log_dir = run_dir / contract.LOG_DIR
            if not log_dir.is_dir():
                continue
            for path in log_dir.iterdir():
                if path in self._files:
                    continue
                rank = contract.rank_of_log_name(path.name)
                if rank is not None:
                    self.ranks_seen.add(rank)
                    self._files[path] = _Tailed(path, rank, "stdout")
                elif path.name == contract.LAUNCHER_LOG:
                    self._files[path] = _Tailed(path, None, "stderr")
        for path in self._launcher_files():
            if path not in self._files and path.is_file():
                self._files[path] = _Tailed(path, None, "stderr")

    def _read(self, tailed: _Tailed) -> None:
        try:
            with open(tailed.path, "rb") as fh:
                fh.seek(tailed.offset)
                chunk = fh.read(READ_SIZE)
        except OSError:
            return
        if chunk:
            tailed.offset += len(chunk)
            self._emit(tailed, tailed.splitter.feed(chunk))

    def _emit(self, tailed: _Tailed, raw_lines: list[bytes]) -> None:
        if not raw_lines:
            return
        now = time.time()
        lines = [LogLine(tailed.rank, tailed.stream, display_text(r), now) for r in raw_lines]
        with self._lock:
            tail = self._tails.setdefault(tailed.rank, deque(maxlen=self._tail_lines))
            tail.extend(lines)
        if self._dispatcher.wants_lines:
            self._dispatcher.put_lines(lines)


__all__ = ["FileTailPump"]
