"""Progress and metric events: JSON lines on disk, written by the child, tailed by the parent.

One event per line, each a JSON object with at least ``kind``, ``time`` and
``rank``. Kinds the parent understands:

- ``progress``: ``step``, ``total`` (optional), ``epoch`` (optional)
- ``metrics``:  ``step`` (optional), ``metrics`` (name -> number)
- ``checkpoint``: ``path``
- ``message``: ``text``

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
    """Reads events appended since the last call; a partial last line waits for its end."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._pending = b""

    def read_new(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
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


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """All complete events in a file (empty if it does not exist)."""
    return EventTail(path).read_new()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)
