"""The bounded tail of log lines a run view shows: the chosen ranks, the last N lines, short lines.

Whatever the job prints, the view holds at most ``maxlen`` lines per rank, of
at most ``max_chars`` characters each; everything is in the per-rank log files.
"""

from __future__ import annotations

import heapq
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
    return _source_shown(_source(line), ranks)


class LineTail:
    """Keeps the last ``maxlen`` lines of each source; shows those of the selected ranks.

    Every rank (and the launcher) has its own bounded buffer, so choosing
    another rank while the job runs shows that rank's recent lines at once, and
    a chatty rank never pushes a quiet one's lines out. Memory stays bounded:
    ``maxlen`` lines per source, each of at most ``max_chars`` characters.
    Thread-safe: the dispatcher adds, the refresher reads, the user selects.

    Args:
        ranks: ranks to show (None: every rank and the torchrun launcher).
        maxlen: lines shown (and kept per source).
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
        self.maxlen = maxlen
        self.max_chars = max_chars
        self._buffers: dict[object, deque[tuple[int, LogLine]]] = {}  # source -> (order, line)
        self._seen: dict[object, int] = {}  # source -> lines ever added
        self._partials: dict[tuple[object, str], LogLine] = {}  # (source, stream) -> its unfinished line
        self._order = 0
        self.generation = 0  # bumped when another selection of ranks replaces what is shown
        self._dropped = 0  # lines the dispatcher skipped before they reached the view
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """Which lines are shown, in words: ``rank 0``, ``ranks 0, 1``, ``all ranks``."""
        ranks = self.ranks
        if ranks is None:
            return "all ranks"
        ordered = sorted(ranks)
        return ("rank " if len(ordered) == 1 else "ranks ") + ", ".join(map(str, ordered))

    def select(self, ranks: Collection[int] | None) -> None:
        """Show these ranks from now on (None: all); their recent lines show at once."""
        with self._lock:
            self.ranks = frozenset(ranks) if ranks is not None else None
            self.generation += 1

    def add(self, lines: Iterable[LogLine]) -> int:
        """Keep every line (bounded per source); returns how many the selection shows."""
        shown = 0
        with self._lock:
            for ln in lines:
                key = _source(ln)
                buffer = self._buffers.get(key)
                if buffer is None:
                    buffer = self._buffers[key] = deque(maxlen=self.maxlen)
                buffer.append((self._order, self._shorten(ln)))
                self._order += 1
                self._seen[key] = self._seen.get(key, 0) + 1
                self._partials.pop((key, ln.stream), None)  # the finished line replaces it
                shown += _source_shown(key, self.ranks)
        return shown

    def set_partial(self, lines: Iterable[LogLine]) -> int:
        """Show each line as its stream's unfinished end (a ``\\r`` bar), replacing the previous one.

        Returns how many of them the selection shows.
        """
        shown = 0
        with self._lock:
            for ln in lines:
                key = _source(ln)
                self._partials[(key, ln.stream)] = self._shorten(ln)
                shown += _source_shown(key, self.ranks)
        return shown

    def note_dropped(self, count: int) -> None:
        with self._lock:
            self._dropped += count

    def snapshot(self) -> tuple[tuple[LogLine, ...], int, int]:
        """``(lines, hidden, dropped)``: the tail (unfinished lines last, ``partial=True``),
        how many earlier selected lines are no longer in it, and how many lines
        were skipped as too fast to show."""
        numbered, hidden, dropped, _ = self.numbered()
        return tuple(ln for _, ln in numbered), hidden, dropped

    def numbered(self) -> tuple[tuple[tuple[int, LogLine], ...], int, int, int]:
        """As :meth:`snapshot`, each line with its number (rising in arrival order; -1 for an
        unfinished line), and the selection's generation: what a front end needs to append
        only the lines it has not shown yet."""
        with self._lock:
            chosen = [key for key in self._buffers if _source_shown(key, self.ranks)]
            merged = heapq.merge(*(self._buffers[key] for key in chosen))
            partials = sorted(
                (ln for (key, _), ln in self._partials.items() if _source_shown(key, self.ranks)),
                key=lambda ln: ln.time,
            )[-self.maxlen :]
            room = self.maxlen - len(partials)
            whole = tuple(merged)
            whole = whole[max(0, len(whole) - room) :] if room > 0 else ()
            seen = sum(self._seen[key] for key in chosen)
            out = whole + tuple((-1, ln) for ln in partials)
            return out, seen - len(whole), self._dropped, self.generation

    def _shorten(self, line: LogLine) -> LogLine:
        if len(line.text) <= self.max_chars:
            return line
        cut = len(line.text) - self.max_chars
        return replace(line, text=f"{line.text[: self.max_chars]} … [{cut:,} more characters in the log file]")


_LAUNCHER, _NOTES = "launcher", "nbexec"  # buffers for torchrun's own lines and nbexec's notes


def _source(line: LogLine) -> object:
    if line.rank is not None:
        return line.rank
    return _NOTES if line.text.startswith(NBEXEC_PREFIX) else _LAUNCHER


def _source_shown(key: object, ranks: Collection[int] | None) -> bool:
    if ranks is None or key == _NOTES:
        return True
    return isinstance(key, int) and key in ranks
