"""The runs this kernel started that are still running, cancelled when the kernel shuts down.

A shutdown or restart request from Jupyter ends the kernel's process
normally, so Python's ``atexit`` hooks run; the daemon threads that would
write a background run's outcome do not get to. The hook registered here
cancels each run the magics started that is still running and waits for its
bookkeeping: ``result.json`` and the MLflow run end KILLED, and no process of
the job is left. The library installs no signal handlers, so a kernel ended
by a signal runs no hook: its jobs still stop (the guard's death signal), but
their outcome is not written.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbexec.runner.handle import TrainingRun

# Jupyter waits 5 s (shutdown_wait_time) for a kernel to exit before it signals it:
# the jobs get a short grace period, and the bookkeeping the rest.
SHUTDOWN_GRACE_S = 2.0

_live: set[TrainingRun] = set()
_lock = threading.Lock()
_hooked = False


def track(run: TrainingRun) -> None:
    """Cancel ``run`` when this process exits, if it is still running then."""
    global _hooked
    with _lock:
        _live.difference_update([r for r in _live if r.done()])
        _live.add(run)
        if not _hooked:
            atexit.register(cancel_live_runs)
            _hooked = True


def live_runs() -> list[TrainingRun]:
    """The tracked runs that are still running."""
    with _lock:
        return [r for r in _live if not r.done()]


def cancel_live_runs(grace: float = SHUTDOWN_GRACE_S) -> None:
    """Cancel every tracked run still running: ``grace`` seconds in all, then SIGKILL.

    One after the other (no new threads at interpreter exit), sharing one
    grace period; each returns once its job is gone and its outcome written.
    """
    with _lock:
        runs = [r for r in _live if not r.done()]
        _live.clear()
    deadline = time.monotonic() + grace
    for run in runs:
        try:
            run.cancel(grace=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - the next run must still be cancelled
            pass


__all__ = ["track", "live_runs", "cancel_live_runs"]
