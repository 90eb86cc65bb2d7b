"""Job guard: the parent of torchrun, so that nothing of a job outlives it.

    python -I -S .../nbexec/runner/guard.py ARGV...     (python -m nbexec.runner.guard works too)

torchrun starts every worker in a new session, and a worker's own children
(data loaders, helper servers) are orphaned, not killed, when the worker
dies. The guard closes that gap on Linux:

- it is a *child subreaper*: orphans anywhere below it are re-parented to it
  instead of to init, so it can always find them;
- on SIGTERM/SIGINT/SIGHUP (the parent sets SIGTERM as its death signal, so a
  killed notebook kernel sends it) it stops the whole tree: SIGTERM, a grace
  period, then SIGKILL;
- when torchrun exits, it stops whatever the job left running, then exits
  with torchrun's status (re-raising torchrun's death signal, if any; one no
  handler can be set for, SIGKILL, is re-raised all the same);
- torchrun dies with it: the guard sets SIGKILL as torchrun's death signal, so
  a guard killed outright (``kill -9``) takes torchrun along, and the ranks die
  with torchrun. What they started is then orphaned outside the tree; the
  parent finds it by the job's mark in its environment (``process.stop_job``).

Standard library only, and no torch: it must start in milliseconds. It runs
isolated (``-I -S``, see ``process.GUARD_ARGV``), so it must not import nbexec.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
GRACE_ENV = "NBEXEC_GUARD_GRACE"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    # Ignore further stop signals first: a second one arriving while the first is being
    # handled must not raise again and end the guard before it has stopped the job.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signum)


def descendants(root: int) -> list[int]:
    """Pids below ``root`` in the process tree (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            # the command name (field 2) may contain spaces and parens: split after the last ')'
            ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):  # gone, or caught mid-exit: the guard must not fail here
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def stop_tree(grace: float) -> None:
    """SIGTERM every descendant, reap for up to ``grace`` s, SIGKILL what is left."""
    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while descendants(me) and time.monotonic() < deadline:
            _reap(block=False)
            time.sleep(0.05)
    _reap(block=False)


def _reap(block: bool) -> tuple[int, int] | None:
    try:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    return (pid, status) if pid else None


def _die_with_me() -> Callable[[], None] | None:
    """A preexec hook that makes the child get SIGKILL when the guard dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now: the hook runs in the forked child
    guard = os.getpid()

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != guard:  # the guard died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return set_pdeathsig


def exit_like(signum: int) -> int:
    """End this process by ``signum``, as the child it stands for ended; else return 128 + signum.

    SIGKILL cannot have a handler (``signal.signal`` refuses it) but needs none
    to end a process; a signal whose default is not to end one (or that cannot
    be reset) leaves the shell's code for it.
    """
    if signum != signal.SIGKILL:
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            return 128 + signum
    os.kill(os.getpid(), signum)
    return 128 + signum  # still here: its default action is not to end a process


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -I -S guard.py ARGV...  (or python -m nbexec.runner.guard ARGV...)", file=sys.stderr)
        return 2
    grace = float(os.environ.get(GRACE_ENV, "5"))
    linux = sys.platform.startswith("linux")
    if linux:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    child = None
    code = 1
    try:
        child = subprocess.Popen(argv, preexec_fn=_die_with_me())  # noqa: PLW1509 - the guard has one thread
        status = None
        while status is None:
            reaped = _reap(block=True)  # reaps orphans too, so none stay zombies
            if reaped is None:
                break
            if reaped[0] == child.pid:
                status = reaped[1]
        code = os.waitstatus_to_exitcode(status) if status is not None else 1
        for sig in STOP_SIGNALS:  # torchrun is over: a stop signal now changes nothing of what follows
            signal.signal(sig, signal.SIG_IGN)
    except _Stop as stop:
        code = -stop.signum
    if linux:
        stop_tree(grace)  # the whole job on a stop; anything the job left running otherwise
    elif child is not None and child.poll() is None:
        child.terminate()
    if code < 0:  # die the way torchrun died, so the parent sees the same signal
        return exit_like(-code)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
