"""Progress and metric events: JSON lines on disk, written by the child, tailed by the parent.

One event per line, each a JSON object with at least ``kind``, ``time`` and
``rank``. Kinds the parent understands:

- ``progress``: ``step``, ``total`` (optional), ``epoch`` (optional)
- ``metrics``:  ``step`` (optional), ``metrics`` (name -> number)
- ``checkpoint``: ``path``
- ``message``: ``text``
- ``phase``: ``phase`` (starting, training, finishing, stopping), ``detail`` (optional);
  see :mod:`nbexec.runner.state`
- ``data``: ``path``, the data the trainer used
- ``resources``: the ranks' CPU, memory and GPU use, sampled by the parent (not in
  ``events.jsonl``; see :mod:`nbexec.runner.resources`)

Unknown kinds are kept and passed on, so trainers can add their own.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class EventWriter:
    """Appends events to a JSON-lines file, one ``write`` per event (safe to tail)."""

    def __init__(self, path: str | os.PathLike[str], *, rank: int = 0) -> None:
        self.path = Path(path)
        self.rank = rank
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, kind: str, **fields: Any) -> Event:
        event: Event = {"kind": kind, "time": time.time(), "rank": self.rank, **fields}
        line = json.dumps(event, default=_jsonable, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        return event

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # the fd must not leak in long-lived kernels
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class EventTail:
    """Reads events appended since the last call; a partial last line waits for its end.

    The file stays open between calls (once it exists), so a call that finds
    nothing new costs one ``read``: the parent reads events before each batch of
    a rank's lines, so that the lines never overtake the events written before them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh: Any = None
        self._pending = b""

    def read_new(self) -> list[Event]:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open; closed in close()
            except FileNotFoundError:
                return []
        chunk = self._fh.read()
        if not chunk:
            return []
        data = self._pending + chunk
        *complete, self._pending = data.split(b"\n")
        events = []
        for raw in complete:
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                continue  # a corrupt line must not stop the run's bookkeeping
            if isinstance(item, dict):
                events.append(item)
        return events

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """All complete events in a file (empty if it does not exist)."""
    tail = EventTail(path)
    try:
        return tail.read_new()
    finally:
        tail.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)
