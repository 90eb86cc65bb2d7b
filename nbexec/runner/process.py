"""Start the launcher process tied to this one, and stop a whole job's process tree.

Two facts shape this module:

- torchrun starts each worker with ``start_new_session=True``, so signalling
  torchrun's process group misses the workers. Stopping a job walks the real
  process tree (psutil) instead.
- ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits,
  not the process. Launchers are therefore spawned from one long-lived thread
  owned by this module, never from the caller's (possibly short-lived) thread.
- A tree can break: when the guard is killed outright, what the ranks started
  is re-parented to init. Every process of a job therefore carries the job's
  mark in its environment (``NBEXEC_JOB_MARK``, inherited by whatever the job
  starts), and stopping a job also stops every process of this user with that
  mark. (A process that clears its environment and leaves the tree is missed.)
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a tree is walked: a launch does not pay for it
    import psutil

PR_SET_PDEATHSIG = 1
JOB_MARK_ENV = "NBEXEC_JOB_MARK"  # set for the guard, inherited by every process of the job
KILL_WAIT_S = 5.0  # after SIGKILL, how long a process may take to be gone
# The guard is standard library only, so it runs isolated and without site
# (-I -S): no site-packages scan and no script directory on sys.path. That
# saves ~10 ms of every launch, and the guard is started before torchrun is.
GUARD_ARGV = (sys.executable, "-I", "-S", str(Path(__file__).with_name("guard.py")))


def _make_pdeathsig() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    # Resolve prctl now: the hook below runs in the forked child, where
    # anything beyond a plain C call can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_pdeathsig() -> None:
        # SIGTERM, not SIGKILL: the guard catches it and stops the whole job.
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


class _Spawner:
    """A daemon thread that lives as long as the process and does every Popen."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Future[subprocess.Popen[bytes]], dict]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._preexec = _make_pdeathsig()

    def spawn(self, **popen_kwargs: object) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="nbexec-spawner", daemon=True)
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((future, popen_kwargs))
        return future.result()

    def _loop(self) -> None:
        while True:
            future, kwargs = self._requests.get()
            try:
                future.set_result(subprocess.Popen(preexec_fn=self._preexec, **kwargs))  # type: ignore[call-overload]
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                future.set_exception(err)


_SPAWNER = _Spawner()
# launcher -> its job's mark, as it appears in /proc/<pid>/environ
_MARKS: weakref.WeakKeyDictionary[subprocess.Popen[bytes], bytes] = weakref.WeakKeyDictionary()


def spawn_launcher(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a list, never a shell string) under the job guard, in its own session.

    Its stdout/stderr are pipes. If this process dies, the guard gets SIGTERM
    and stops every process of the job (see :mod:`nbexec.runner.guard`).
    Every process of the job gets the job's mark (``NBEXEC_JOB_MARK``) in its
    environment: :func:`stop_job` finds them by it.
    """
    mark = f"{os.getpid()}-{uuid.uuid4().hex}"
    launcher = _SPAWNER.spawn(
        args=[*GUARD_ARGV, *argv],
        env={**env, JOB_MARK_ENV: mark},
        cwd=str(cwd) if cwd is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    _MARKS[launcher] = f"{JOB_MARK_ENV}={mark}".encode()
    return launcher


def job_processes(launcher: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The live processes of the job started by :func:`spawn_launcher`, the guard aside.

    The tree below the guard while the guard runs, and every process that
    carries the job's mark, wherever it is in the tree (orphans of a killed
    guard live under init).
    """
    import psutil

    found: dict[int, psutil.Process] = {}
    if launcher.poll() is None:  # not reaped: the pid is still the guard's
        for p in process_tree(launcher.pid)[1:]:
            found[p.pid] = p
    mark = _MARKS.get(launcher)
    if mark is not None:
        for pid in _marked_pids(mark):
            if pid not in found:
                try:
                    found[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    pass
    return [p for p in found.values() if _alive(p)]


def stop_job(launcher: subprocess.Popen[bytes], grace: float) -> list[psutil.Process]:
    """Stop every process of a job: SIGTERM, up to ``grace`` s, then SIGKILL.

    The guard gets the same signals (on SIGTERM it stops the tree itself).
    Processes are searched again while waiting, so a late worker, or an
    orphan the tree lost, is stopped too. The guard is waited for through
    ``launcher`` (its exit status stays with the Popen).

    Returns:
        Processes of the job still alive at the end (empty when it is gone).
    """
    seen: dict[int, psutil.Process] = {}

    def left() -> list[psutil.Process]:
        for p in job_processes(launcher):
            seen.setdefault(p.pid, p)
        return [p for p in seen.values() if _alive(p)]

    if not left() and launcher.poll() is not None:
        return []
    for sig, wait in ((signal.SIGTERM, max(0.0, grace)), (signal.SIGKILL, KILL_WAIT_S)):
        if launcher.poll() is None:
            launcher.send_signal(sig)
        _send(left(), sig)
        deadline = time.monotonic() + wait
        while (left() or launcher.poll() is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left() and launcher.poll() is not None:
            return []
    return left()


def stop_leftovers(launcher: object) -> list[psutil.Process]:
    """After the guard has exited: stop any process of its job still running, at once.

    The guard stops the whole job before it exits; this matters when it could
    not (it was killed). A no-op for a launcher :func:`spawn_launcher` did not start.
    """
    if not isinstance(launcher, subprocess.Popen) or launcher not in _MARKS:
        return []
    return stop_job(launcher, grace=0.0)


def _marked_pids(mark: bytes) -> list[int]:
    """Pids of this user's processes whose environment holds ``mark`` (``NAME=value``)."""
    me = os.getpid()
    if not os.path.isdir("/proc"):
        import psutil

        name, _, value = mark.decode().partition("=")
        out = []
        for p in psutil.process_iter():
            try:
                if p.pid != me and p.environ().get(name) == value:
                    out.append(p.pid)
            except (psutil.Error, OSError):
                continue
        return out
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # gone, or another user's
            continue
        if mark in environ.split(b"\0"):
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that are alive now."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def terminate_tree(pid: int, grace: float, also: Sequence[psutil.Process] = ()) -> list[psutil.Process]:
    """SIGTERM the tree under ``pid``, wait up to ``grace`` s, then SIGKILL survivors.

    Processes that get reparented while we wait (a worker whose torchrun died)
    are still tracked: we hold their psutil handles from the first snapshot.

    Returns:
        Processes still alive at the end (empty when the job is gone).
    """
    import psutil

    procs = {p.pid: p for p in [*process_tree(pid), *also]}
    _send(procs.values(), signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=max(0.0, grace))
    # Anything started while we waited (a late worker) goes too.
    for p in process_tree(pid):
        procs.setdefault(p.pid, p)
    alive = [p for p in procs.values() if _alive(p)]
    if alive:
        _send(alive, signal.SIGKILL)
        _, alive = psutil.wait_procs(alive, timeout=5)
    return alive


def _send(procs: object, sig: int) -> None:
    import psutil

    for p in procs:  # type: ignore[attr-defined]
        try:
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _alive(p: psutil.Process) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def signal_name(exit_code: int | None) -> str | None:
    """``-9`` -> ``"SIGKILL"``: Popen reports death by signal as a negative code."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return None


__all__ = [
    "spawn_launcher", "job_processes", "stop_job", "stop_leftovers", "process_tree", "terminate_tree", "signal_name",
]
