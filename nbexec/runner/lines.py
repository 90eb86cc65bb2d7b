"""Bytes from a rank's stream -> whole lines, tagged with rank and stream.

A line is what a terminal would leave on screen once the line is done: a
``\\r`` returns to the start of the line and what follows overwrites what was
there (a progress bar redrawn a thousand times is one line, its last frame).
That *picture* is what the rank log keeps and what the views show; bytes that
are not UTF-8 stay as they were in the log and show as U+FFFD.

The unfinished end of a stream (a bar being redrawn, a prompt) is available as
:attr:`LineSplitter.pending`, so views can show it live before its newline.
"""

from __future__ import annotations

from dataclasses import dataclass

LAUNCHER = None  # rank of lines printed by torchrun itself
# A "line" that never ends is cut here, so one stream can never hold more than
# this in memory. A \r-redrawn one is first reduced to its picture, so a bar
# redrawn forever is never cut.
MAX_PENDING = 1 << 20
COMPACT_AT = 1 << 16  # an unfinished line with \r in it is reduced to its picture past this size


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of output.

    Attributes:
        rank: global rank, or None for the torchrun launcher's own lines.
        stream: ``"stdout"`` or ``"stderr"``.
        text: display text (decoded, ``\\r`` redraws applied, no newline).
        time: when the parent received it (``time.time()``).
        partial: the unfinished end of a stream (e.g. a progress bar being
            redrawn); a later partial or the finished line replaces it.
    """

    rank: int | None
    stream: str
    text: str
    time: float
    partial: bool = False

    @property
    def source(self) -> str:
        return "launcher" if self.rank is None else f"rank{self.rank}"

    def format(self) -> str:
        """``[rank1] text``; stderr marked with ``!``: ``[rank1!] text``."""
        mark = "!" if self.stream == "stderr" else ""
        return f"[{self.source}{mark}] {self.text}"


def terminal_picture(raw: bytes) -> bytes:
    """What a terminal shows for one line: each ``\\r`` returns to column 0 and overwrites.

    ``b"abcdef\\rXY"`` -> ``b"XYcdef"``; a trailing ``\\r`` (a ``\\r\\n`` line
    ending) is dropped. Overwriting goes by character, not byte, so a frame of
    ``█`` (3 bytes each) over a frame of spaces leaves no half characters;
    bytes that are not UTF-8 are kept as they are.
    """
    if b"\r" not in raw:
        return raw
    raw = raw.rstrip(b"\r")
    if b"\r" not in raw:
        return raw
    picture = ""
    for segment in raw.decode("utf-8", errors="surrogateescape").split("\r"):
        picture = segment + picture[len(segment) :]
    return picture.encode("utf-8", errors="surrogateescape")


def display_text(raw: bytes) -> str:
    """The text a view shows for one raw line: its terminal picture, decoded."""
    return terminal_picture(raw).decode("utf-8", errors="replace")


class LineSplitter:
    """Accumulates chunks of one stream and returns the complete lines in them."""

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> bytes:
        """The unfinished end of the stream (no newline yet), as received."""
        return self._pending

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add a chunk; return the complete raw lines (without ``\\n``) it finished."""
        data = self._pending + chunk if self._pending else chunk
        *lines, self._pending = data.split(b"\n")
        if len(self._pending) > COMPACT_AT and b"\r" in self._pending:
            # Keep the picture, not every frame. A trailing \r is kept: the
            # next frame starts from column 0 either way.
            tail = b"\r" if self._pending.endswith(b"\r") else b""
            self._pending = terminal_picture(self._pending) + tail
        if len(self._pending) > MAX_PENDING:
            lines.append(self._pending)
            self._pending = b""
        return lines

    def flush(self) -> list[bytes]:
        """At end of stream: the unterminated last line, if any."""
        rest, self._pending = self._pending, b""
        return [rest] if rest else []
