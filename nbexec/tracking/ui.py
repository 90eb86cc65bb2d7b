"""An MLflow web UI for a local store, started on request on 127.0.0.1 (``%mlflow_ui``, ``nbexec ui``).

    ui = start_ui()              # the store runs go to (./mlflow.db by default); reuses a running one
    ui.url                       # http://127.0.0.1:PORT; summaries and the run history now link runs there
    ui.stop()                    # SIGTERM to its process group, SIGKILL after a grace period

The UI is ``mlflow server`` on the store (an argv list, never a shell string),
on a free port of 127.0.0.1 only, in its own session. :func:`start_ui` returns
once the server answers ``/health``; a server that exits first is reported with
the end of its log. While it runs, every run of the store is a link
(:func:`nbexec.render.links.register_ui`).

A record beside the database (``.mlflow-ui.json``: pid, port, URL, store) lets
another process (a terminal's ``nbexec ui``, another kernel) find the running UI
and reuse it instead of starting a second one. A record whose process is gone,
is not that server, or does not answer is ignored and replaced. A UI a kernel
started is stopped when the kernel exits normally (shutdown, restart); after a
``kill -9`` of the kernel it keeps running, and the next ``start_ui`` reuses it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from nbexec.errors import TrackingError
from nbexec.render.links import WORKFLOW_QUERY, experiment_url, register_ui, run_url, server_url, unregister_ui
from nbexec.tracking.store import (
    DEFAULT_ARTIFACT_DIR,
    display_store_uri,
    ensure_sqlite_store,
    normalize_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
)

HOST = "127.0.0.1"
RECORD_NAME = ".mlflow-ui.json"  # beside the database
LOG_NAME = ".mlflow-ui.log"
START_TIMEOUT_S = 120.0  # `mlflow server` imports for ~10 s on a busy 2-core machine
STOP_GRACE_S = 10.0
PORT_TRIES = 3  # a free port can be taken between choosing it and the server binding it

_lock = threading.RLock()  # stop() takes it too, also while start_ui holds it
_started: dict[str, MlflowUI] = {}  # store URI -> the UI this process started


@dataclass
class MlflowUI:
    """A running MLflow UI serving one tracking store.

    Attributes:
        url: its base URL (``http://127.0.0.1:PORT``).
        store_uri: the store it serves (normalized: ``sqlite:////abs/mlflow.db``).
        pid: the server's process id (the leader of its process group); None for a remote server.
        owned: this process started it (and stops it when it exits).
    """

    url: str
    store_uri: str
    pid: int | None = None
    owned: bool = False
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def remote(self) -> bool:
        """The store is itself a tracking server: nothing was started."""
        return self.pid is None

    def experiment_url(self, experiment_id: str) -> str:
        """An experiment's page (in MLflow's "Machine learning" view)."""
        return experiment_url(self.url, experiment_id)

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        """A run's page (in MLflow's "Machine learning" view)."""
        return run_url(self.url, run_id, experiment_id)

    @property
    def home_url(self) -> str:
        """The experiments list (in MLflow's "Machine learning" view)."""
        return f"{self.url}/#/experiments?{WORKFLOW_QUERY}"

    def running(self) -> bool:
        """The server process is still there (a remote server: always True)."""
        if self.pid is None:
            return True
        if self._process is not None:
            return self._process.poll() is None
        return _is_ui_process(self.pid, self.store_uri)

    def wait(self) -> int | None:
        """Block until the server exits on its own; its exit code (None when not started here)."""
        return self._process.wait() if self._process is not None else None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``grace`` seconds.

        Returns once no process of the group is left; idempotent. A remote server is left alone.
        """
        if self.pid is None:
            return
        unregister_ui(self.store_uri)
        with _lock:
            if _started.get(self.store_uri) is self:
                del _started[self.store_uri]
        if self.running():
            _stop_group(self.pid, grace, self._process)
        elif self._process is not None:
            self._process.wait()
        _remove_record(self.store_uri, self.pid)

    def describe(self) -> str:
        """One line: where the UI is and what serves it."""
        if self.pid is None:
            return f"{self.store_uri} is a tracking server: its runs are at {self.home_url}"
        how = "started here" if self.owned else "already running"
        return f"MLflow UI for {display_store_uri(self.store_uri)} at {self.home_url} (pid {self.pid}, {how})"

    def _repr_html_(self) -> str:
        if not self.running():
            return f"<div>MLflow UI {escape(self.url)}: stopped</div>"
        link = f'<a href="{escape(self.home_url)}" target="_blank" rel="noopener">{escape(self.url)}</a>'
        store = escape(display_store_uri(self.store_uri))
        if self.pid is None:
            return f"<div>MLflow tracking server: {link} (runs link to it already)</div>"
        how = "started here" if self.owned else "already running"
        return (
            f"<div>MLflow UI for <code>{store}</code>: {link} (pid {self.pid}, {how}). "
            "Run summaries and the panel's history link runs to it; "
            "<code>%mlflow_ui --stop</code> stops it.</div>"
        )

    def __repr__(self) -> str:
        if self.pid is None:
            return f"<MlflowUI {self.url} (tracking server)>"
        state = "running" if self.running() else "stopped"
        return f"<MlflowUI {self.url} pid {self.pid} {state}, store {display_store_uri(self.store_uri)}>"


def start_ui(
    tracking_uri: str | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
) -> MlflowUI:
    """Start an MLflow UI on 127.0.0.1 for a local store, or reuse the one already serving it.

    Args:
        tracking_uri: the store (default: the one runs go to, as for a training job:
            ``$MLFLOW_TRACKING_URI``, the current setup's, else ``./mlflow.db``).
            A tracking server needs no UI: its handle is returned as is.
        port: the port to listen on (default: a free one).
        timeout: seconds to wait for the server to answer.

    Returns:
        The running UI; its runs' pages are links from now on.

    Raises:
        TrackingError: the store is not a local SQLite file or a server, the port is
            taken, or the server did not start (the message ends with its log).
    """
    uri = normalize_tracking_uri(resolve_tracking_uri(tracking_uri))
    remote = server_url(uri) if uri.startswith(("http://", "https://")) else None
    if remote is not None:
        return MlflowUI(url=remote, store_uri=uri)
    db = sqlite_path(uri)
    if db is None:
        raise TrackingError(
            f"nbexec starts a UI for a SQLite store (sqlite:///mlflow.db) or links a server's pages; "
            f"{uri!r} is neither: run `mlflow ui --backend-store-uri {uri}` yourself"
        )
    from nbexec.tracking.store import mlflow_ui_installed

    with _lock:
        mine = _started.get(uri)
        running = mine if mine is not None and mine.running() and _answers(mine.url) else _running_from_record(uri)
        if running is not None:
            if port is not None and _port(running.url) != port:
                raise TrackingError(
                    f"an MLflow UI already serves {display_store_uri(uri)} at {running.url} (pid {running.pid}); "
                    f"use it, or stop it first (%mlflow_ui --stop, nbexec ui --stop) to serve on port {port}"
                )
            register_ui(uri, running.url)
            return running
        if not mlflow_ui_installed():  # nbexec itself needs only mlflow-skinny, which has no server
            raise TrackingError(
                "the MLflow UI is not installed here (nbexec brings mlflow-skinny, MLflow's client, without "
                "its web server): pip install 'nbexec[ui]' (or pip install mlflow), then try again"
            )
        ensure_sqlite_store(uri)  # made whole under nbexec's lock, never half-made by the server
        ui = _start(uri, db, port, timeout)
        _started[uri] = ui
    _write_record(ui)
    register_ui(uri, ui.url)
    return ui


def find_ui(tracking_uri: str | None = None) -> MlflowUI | None:
    """The UI serving the store, if one runs (started by this process or found by its record)."""
    uri = normalize_tracking_uri(resolve_tracking_uri(tracking_uri))
    if sqlite_path(uri) is None:
        return None
    with _lock:
        mine = _started.get(uri)
        if mine is not None and mine.running():
            return mine
    return _running_from_record(uri)


def stop_ui(tracking_uri: str | None = None, grace: float = STOP_GRACE_S) -> MlflowUI | None:
    """Stop the UI serving the store (whoever started it); the stopped UI, or None when none ran."""
    ui = find_ui(tracking_uri)
    if ui is not None:
        ui.stop(grace)
    return ui


def ui_argv(store_uri: str, port: int, artifacts: Path) -> list[str]:
    """The server's command: ``python -m mlflow server`` on 127.0.0.1, one worker."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST, "--port", str(port), "--workers", "1",
        "--backend-store-uri", store_uri,
        "--default-artifact-root", artifacts.as_uri(),
    ]


def _start(uri: str, db: Path, port: int | None, timeout: float) -> MlflowUI:
    if port is not None and not _port_free(port):
        raise TrackingError(
            f"port {port} on {HOST} is taken by another program: choose another (--port) or leave it out "
            "to use a free one"
        )
    log_path = db.parent / LOG_NAME
    artifacts = db.parent / DEFAULT_ARTIFACT_DIR
    tries = 1 if port is not None else PORT_TRIES
    for attempt in range(tries):
        chosen = port if port is not None else _free_port()
        url = f"http://{HOST}:{chosen}"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ui_argv(uri, chosen, artifacts), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=db.parent, start_new_session=True,  # its own group: stopping it reaches its workers
            )
        ui = MlflowUI(url=url, store_uri=uri, pid=process.pid, owned=True, log_path=log_path, _process=process)
        problem = _wait_until_answering(ui, process, timeout)
        if problem is None:
            return ui
        ui.stop()
        log_text = _tail(log_path)
        if port is None and attempt + 1 < tries and "address already in use" in log_text.lower():
            continue  # the port was taken meanwhile: another one
        raise TrackingError(
            f"the MLflow UI for {display_store_uri(uri)} did not start on {url}: {problem}. "
            f"Its log ({log_path}) ends with:\n{log_text}"
        )
    raise AssertionError("unreachable")  # the loop returns or raises


def _wait_until_answering(ui: MlflowUI, process: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once the server answers ``/health``; why not, when it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            return f"the server exited with code {code}"
        if _answers(ui.url):
            return None
        if time.monotonic() > deadline:
            return f"no answer from {ui.url}/health after {timeout:.0f} s"
        time.sleep(0.2)  # polling the server's readiness (it has no other signal)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _stop_group(pid: int, grace: float, process: subprocess.Popen[bytes] | None) -> None:
    import psutil

    try:
        members = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace)
    if alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
    if process is not None:
        process.wait()  # reaped: no zombie left behind


def _is_ui_process(pid: int, store_uri: str) -> bool:
    """``pid`` is an ``mlflow server`` serving ``store_uri`` (not a recycled pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        return proc.status() != psutil.STATUS_ZOMBIE and "mlflow" in " ".join(cmdline) and store_uri in cmdline
    except psutil.Error:
        return False


def _record_path(store_uri: str) -> Path:
    db = sqlite_path(store_uri)
    assert db is not None
    return db.parent / RECORD_NAME


def _write_record(ui: MlflowUI) -> None:
    path = _record_path(ui.store_uri)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": ui.url, "pid": ui.pid, "store": ui.store_uri}))
    os.replace(tmp, path)


def _running_from_record(store_uri: str) -> MlflowUI | None:
    path = _record_path(store_uri)
    try:
        record = json.loads(path.read_text())
        url, pid = str(record["url"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("store") != store_uri or not _is_ui_process(pid, store_uri) or not _answers(url):
        return None
    return MlflowUI(url=url, store_uri=store_uri, pid=pid, owned=False, log_path=path.with_name(LOG_NAME))


def _remove_record(store_uri: str, pid: int) -> None:
    path = _record_path(store_uri)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@atexit.register
def _stop_started() -> None:
    """Stop the UIs this process started when it exits (a kernel's shutdown or restart)."""
    for ui in list(_started.values()):
        with contextlib.suppress(Exception):
            ui.stop(grace=5.0)
