"""Bytes from a rank's pipe -> whole lines, tagged with rank and stream.

The raw bytes of complete lines go to the rank's log file unchanged (``\\r``
redraws and invalid UTF-8 included); the display text of a line keeps only
what a terminal would show last: the part after the final ``\\r``.
"""

from __future__ import annotations

from dataclasses import dataclass

LAUNCHER = None  # rank of lines printed by torchrun itself
# A "line" that never ends (a progress bar redrawn with \r forever) is cut here,
# so one stream can never hold more than this in memory.
MAX_PENDING = 1 << 20


@dataclass(frozen=True, slots=True)
class LogLine:
    """One whole line of output.

    Attributes:
        rank: global rank, or None for the torchrun launcher's own lines.
        stream: ``"stdout"`` or ``"stderr"``.
        text: display text (decoded, ``\\r`` redraws collapsed, no newline).
        time: when the parent received it (``time.time()``).
    """

    rank: int | None
    stream: str
    text: str
    time: float

    @property
    def source(self) -> str:
        return "launcher" if self.rank is None else f"rank{self.rank}"

    def format(self) -> str:
        """``[rank1] text``; stderr marked with ``!``: ``[rank1!] text``."""
        mark = "!" if self.stream == "stderr" else ""
        return f"[{self.source}{mark}] {self.text}"


def display_text(raw: bytes) -> str:
    """What a terminal shows for one raw line: text after the last ``\\r``."""
    if raw.endswith(b"\r"):
        raw = raw.rstrip(b"\r")  # "\r\n" line endings
    cut = raw.rfind(b"\r")
    if cut >= 0:
        raw = raw[cut + 1 :]
    return raw.decode("utf-8", errors="replace")


class LineSplitter:
    """Accumulates chunks of one stream and returns the complete lines in them."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add a chunk; return the complete raw lines (without ``\\n``) it finished."""
        data = self._pending + chunk if self._pending else chunk
        *lines, self._pending = data.split(b"\n")
        if len(self._pending) > MAX_PENDING:
            lines.append(self._pending)
            self._pending = b""
        return lines

    def flush(self) -> list[bytes]:
        """At end of stream: the unterminated last line, if any."""
        rest, self._pending = self._pending, b""
        return [rest] if rest else []
