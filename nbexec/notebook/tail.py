"""The bounded tail of log lines a run view shows: the chosen ranks, the last N lines, short lines.

Whatever the job prints, the view holds at most ``maxlen`` lines of at most
``max_chars`` characters each; everything is in the per-rank log files.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import replace

from nbexec.runner.lines import LogLine

DEFAULT_TAIL = 40
MAX_LINE_CHARS = 2000
NBEXEC_PREFIX = "nbexec:"  # the runner's own messages (e.g. a finalizer that failed) always show


def is_shown(line: LogLine, ranks: Collection[int] | None) -> bool:
    """Whether a view of ``ranks`` (None: all) shows ``line``.

    torchrun's own output repeats the failing rank's traceback at length, so it
    shows only with every rank selected; nbexec's own notes always show.
    """
    if line.rank is None:
        return ranks is None or line.text.startswith(NBEXEC_PREFIX)
    return ranks is None or line.rank in ranks


class LineTail:
    """Keeps the last ``maxlen`` lines of the selected ranks; thread-safe.

    Args:
        ranks: ranks to keep (None: every rank and the torchrun launcher).
        maxlen: lines kept.
        max_chars: longer lines are cut, saying how much was cut.
    """

    def __init__(
        self,
        ranks: Collection[int] | None = (0,),
        *,
        maxlen: int = DEFAULT_TAIL,
        max_chars: int = MAX_LINE_CHARS,
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen}")
        self.ranks = frozenset(ranks) if ranks is not None else None
        self.max_chars = max_chars
        self._lines: deque[LogLine] = deque(maxlen=maxlen)
        self._seen = 0  # selected lines ever added
        self._dropped = 0  # lines the dispatcher skipped before they reached the view
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """Which lines are shown, in words: ``rank 0``, ``ranks 0, 1``, ``all ranks``."""
        if self.ranks is None:
            return "all ranks"
        ordered = sorted(self.ranks)
        return ("rank " if len(ordered) == 1 else "ranks ") + ", ".join(map(str, ordered))

    def wants(self, line: LogLine) -> bool:
        return is_shown(line, self.ranks)

    def add(self, lines: Iterable[LogLine]) -> int:
        """Keep the wanted ones; returns how many were."""
        kept = [self._shorten(ln) for ln in lines if self.wants(ln)]
        if kept:
            with self._lock:
                self._lines.extend(kept)
                self._seen += len(kept)
        return len(kept)

    def note_dropped(self, count: int) -> None:
        with self._lock:
            self._dropped += count

    def snapshot(self) -> tuple[tuple[LogLine, ...], int, int]:
        """``(lines, hidden, dropped)``: the tail, how many earlier selected lines
        are no longer in it, and how many lines were skipped as too fast to show."""
        with self._lock:
            lines = tuple(self._lines)
            return lines, self._seen - len(lines), self._dropped

    def _shorten(self, line: LogLine) -> LogLine:
        if len(line.text) <= self.max_chars:
            return line
        cut = len(line.text) - self.max_chars
        return replace(line, text=f"{line.text[: self.max_chars]} … [{cut:,} more characters in the log file]")
