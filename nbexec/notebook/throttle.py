"""Rate limiting for display updates: at most one per ``min_interval`` seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Says how long to wait before the next update is allowed.

    Args:
        min_interval: seconds between two updates (0.25: at most 4 per second).
        clock: a monotonic clock (injectable for tests).
    """

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, not {min_interval}")
        self.min_interval = min_interval
        self._clock = clock
        self._last: float | None = None

    def delay(self) -> float:
        """Seconds until an update is allowed (0.0: now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.min_interval - self._clock())

    def mark(self) -> None:
        """Record that an update was made now."""
        self._last = self._clock()
