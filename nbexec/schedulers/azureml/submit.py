"""Submit an AzureML command job through ``MLClient`` and follow it.

Needs the workspace (``launch.azureml.subscription_id`` / ``resource_group`` /
``workspace``, the ``AZURE_SUBSCRIPTION_ID`` / ``AZURE_RESOURCE_GROUP`` /
``AZUREML_WORKSPACE_NAME`` variables, or the portal's ``config.json``), a
compute cluster (``launch.azureml.compute``) and Azure credentials
(``az login``, a service principal's ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` /
``AZURE_CLIENT_SECRET``, or a managed identity). Without them, an
:class:`EnvironmentCheckError` says what is missing; nothing is submitted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.errors import RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.runner.handle import Finalizer, TrainingRun
from nbexec.runner.lines import LogLine
from nbexec.runner.sinks import Sink
from nbexec.schedulers.azureml.client import TEST_CLIENT_VAR, connect
from nbexec.schedulers.azureml.job import build_command_job, write_job_yaml
from nbexec.schedulers.filetail import FileTailPump

if TYPE_CHECKING:
    from nbexec.runner.job import PumpFeed

POLL_S = 10.0  # how often AzureML is asked for the job's status
MAX_POLL_ERRORS = 30  # consecutive failures to read the status before the run is given up as FAILED
STREAM_DRAIN_S = 30.0  # once the job is over, how long the streamer may take to print the last lines
MAX_STREAM_RESTARTS = 5  # a streamer that fails while the job runs is restarted (it skips lines already shown)
STREAM_RESTART_DELAY_S = 10.0
STREAM_MODULE = "nbexec.schedulers.azureml.stream"
JOB_NAME_FILE = "job_name"  # <output_dir>/azureml/<run_name>/job_name
STREAM_LOG = "stream.log"  # the streamer's own errors (shown as launcher lines)
_EXC_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
# AzureML's job states -> the run's status (the one table; anything else ends FAILED)
AZUREML_STATES: dict[str, RunStatus] = {
    "NotStarted": RunStatus.PENDING, "Queued": RunStatus.PENDING, "Preparing": RunStatus.PENDING,
    "Provisioning": RunStatus.PENDING, "Starting": RunStatus.PENDING,
    "Running": RunStatus.RUNNING, "Finalizing": RunStatus.RUNNING, "CancelRequested": RunStatus.RUNNING,
    "Completed": RunStatus.FINISHED, "Failed": RunStatus.FAILED, "Canceled": RunStatus.KILLED,
    "NotResponding": RunStatus.FAILED,
}
AZUREML_STATES_DONE = {"Completed", "Failed", "Canceled", "NotResponding"}


class AzureMLLauncher:
    """Submits the plan as an AzureML command job and follows rank 0's log through a streamer process.

    Args:
        client: an ``MLClient`` (default: :func:`connect`, when the job starts).
    """

    def __init__(self, client: Any = None) -> None:
        self.client = client

    def start(self, plan: LaunchPlan, feed: PumpFeed) -> tuple[AzureMLJob, FileTailPump]:
        client = self.client or connect(plan.config.launch.azureml, plan.env)
        path: Path = write_job_yaml(plan)
        job = build_command_job(plan, config_file=path.with_name("config.yaml"))
        submitted = client.jobs.create_or_update(job)
        (path.parent / JOB_NAME_FILE).write_text(f"{submitted.name}\n")
        stream_log = path.parent / STREAM_LOG
        pump = FileTailPump(
            plan.run_dir, feed.dispatcher, on_events=feed.on_events,
            dirs=lambda: [plan.run_dir], launcher_files=lambda: [stream_log],
        )
        azure_job = AzureMLJob(client, submitted.name, str(getattr(submitted, "status", "")), plan=plan,
                               studio_url=getattr(submitted, "studio_url", None), stream_log=stream_log, pump=pump)
        return azure_job, pump


class AzureMLJob:
    """A submitted job seen like a process: ``poll()`` is None until AzureML says it is over
    and the streamer has printed the last lines (a bounded wait).

    Attributes:
        name: the job's name in the workspace (its ``job_id``).
        studio_url: the job's page in AzureML studio.
        streamer: the process that streams rank 0's log (``python -m nbexec.schedulers.azureml.stream``).
    """

    pid = None  # not a local process

    def __init__(self, client: Any, name: str, state: str, *, plan: LaunchPlan | None = None,
                 studio_url: str | None = None, stream_log: Path | None = None, pump: Any = None) -> None:
        self.client = client
        self.name = name
        self.job_id: str | None = name
        self.studio_url = studio_url
        self._state = state
        self.error: str | None = None  # why its status could not be read
        self.fast = False  # poll every second (a cancel was asked): see hurry()
        self._errors = 0
        self._next = 0.0
        self._lock = threading.Lock()
        self._plan = plan
        self._pump = pump
        self._stream_log = stream_log
        self.streamer = _start_streamer(plan, name, stream_log) if plan is not None and stream_log else None
        self._over_since: float | None = None
        self._restarts = 0
        self._restart_at: float | None = None

    @property
    def state(self) -> str:
        """AzureML's status name: Queued, Running, ... Completed, Failed, Canceled."""
        return self._state

    def status(self) -> int | None:
        """AzureML's view only: None while it runs, then the exit code (0 for Completed)."""
        with self._lock:
            if self.over:
                return self._code()
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + (min(POLL_S, 1.0) if self.fast else POLL_S)
            try:
                self._state = str(self.client.jobs.get(self.name).status)
                self._errors = 0
            except Exception as err:  # noqa: BLE001 - a network blip must not end the run
                self._errors += 1
                if self._errors >= MAX_POLL_ERRORS:
                    self.error = f"could not read the job's status {self._errors} times: {err}"
                    self._state = "Unknown"
            return self._code() if self.over else None

    def poll(self) -> int | None:
        """Over once AzureML says so and the streamer has printed the last lines (bounded wait)."""
        code = self.status()
        if code is None:
            self._keep_streaming()
            return None
        if self.streamer is None or self.streamer.poll() is not None:
            return code
        self._over_since = self._over_since or time.monotonic()
        return code if time.monotonic() - self._over_since > STREAM_DRAIN_S else None

    def _keep_streaming(self) -> None:
        """Restart a streamer that died (a network error) while the job runs, ``MAX_STREAM_RESTARTS`` times."""
        proc = self.streamer
        code = proc.poll() if proc is not None else None
        if code in (None, 0) or self._restarts >= MAX_STREAM_RESTARTS or self._plan is None:
            return  # streaming, or the stream has ended
        now = time.monotonic()
        if self._restart_at is None:
            self._restart_at = now + STREAM_RESTART_DELAY_S
        if now < self._restart_at:
            return
        self._restarts += 1
        self._restart_at = None
        assert self._stream_log is not None
        with open(self._stream_log, "a") as fh:
            fh.write(f"nbexec: restarting the log streamer ({self._restarts}/{MAX_STREAM_RESTARTS})\n")
        self.streamer = _start_streamer(self._plan, self.name, self._stream_log)

    def hurry(self) -> None:
        """Poll every second from now on (a cancel was asked)."""
        with self._lock:
            self.fast, self._next = True, 0.0

    @property
    def over(self) -> bool:
        return self._state in AZUREML_STATES_DONE or self.error is not None

    def _code(self) -> int:
        return 0 if self._state == "Completed" else 1

    def finish(self) -> int:
        _stop(self.streamer)
        while (code := self.status()) is None:
            time.sleep(min(POLL_S, 1.0))
        return code

    def stop(self, grace: float) -> None:
        """Ask AzureML to cancel the job; return once it reports it over (or ``grace`` + 60 s)."""
        self.hurry()
        self.client.jobs.begin_cancel(self.name)
        deadline = time.monotonic() + grace + 60.0
        while self.status() is None and time.monotonic() < deadline:
            time.sleep(min(POLL_S, 1.0) / 5)

    def outcome(self, exit_code: int, cancelled: bool) -> tuple[RunStatus, RootCause | None]:
        done = AZUREML_STATES.get(self._state)
        if cancelled or done is RunStatus.KILLED:
            return RunStatus.KILLED, None
        if done is RunStatus.FINISHED and exit_code == 0:
            return RunStatus.FINISHED, None
        return RunStatus.FAILED, self._root_cause()

    def _root_cause(self) -> RootCause:
        where = f"; see {self.studio_url or 'the job in AzureML studio'}"
        if self.error:
            return RootCause(rank=None, exit_code=None, message=f"AzureML job {self.name}: {self.error}{where}")
        exc_type, message, trace = last_exception(self._pump.lines(0) if self._pump is not None else [])
        rank = 0 if exc_type else None
        what = message if exc_type else f"AzureML job {self.name} {self._state}"
        return RootCause(rank=rank, exit_code=None, exc_type=exc_type, message=what + where, traceback=trace)


def _start_streamer(plan: LaunchPlan, job_name: str, stream_log: Path) -> subprocess.Popen[bytes] | None:
    """``python -m nbexec.schedulers.azureml.stream``: workspace options on stdin, its errors in ``stream_log``."""
    import json

    argv = [sys.executable, "-m", STREAM_MODULE, "--job", job_name, "--log-dir", str(plan.log_dir)]
    env = dict(plan.env)  # what connect() was given (plans drop NBEXEC_* variables: pass the test hook on)
    if os.environ.get(TEST_CLIENT_VAR):
        env[TEST_CLIENT_VAR] = os.environ[TEST_CLIENT_VAR]
    with open(stream_log, "ab") as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    env=env, start_new_session=True)
        except OSError as error:
            err.write(f"nbexec: could not start the log streamer: {error}\n".encode())
            return None
    assert proc.stdin is not None
    try:  # kept open: the streamer exits when it closes (here, or when this process dies)
        proc.stdin.write(json.dumps(dict(plan.config.launch.azureml), default=str).encode() + b"\n")
        proc.stdin.flush()
    except OSError:
        pass  # it died already; its stderr says why
    return proc


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Close the streamer's stdin (it exits), then terminate it if it has not within 5 s."""
    if proc is None:
        return
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_exception(lines: Sequence[LogLine]) -> tuple[str, str, str]:
    """``(exc_type, message, traceback)`` of the last Python traceback in ``lines`` (empty strings: none)."""
    texts = [ln.text for ln in lines]
    starts = [i for i, t in enumerate(texts) if t.startswith("Traceback (most recent call last)")]
    if not starts:
        return "", "", ""
    block = texts[starts[-1]:]
    for i, text in enumerate(block[1:], 1):
        match = _EXC_RE.match(text)
        if match:
            return match.group(1), match.group(2) or "", "\n".join(block[: i + 1])
    return "", "", ""


def submit_azureml(plan: LaunchPlan, *, sinks: Sequence[Sink] = (), finalizers: Sequence[Finalizer] = (),
                   client: Any = None) -> TrainingRun:
    """Submit ``plan`` as an AzureML command job; returns its handle at once (status RUNNING).

    What :func:`nbexec.launch` does for ``launch.scheduler: azureml``, with a
    client of your own (tests, a notebook that connected already). Lines of
    rank 0 reach ``sinks`` and ``lines()`` while the job runs; once it is
    over, each finalizer gets the result in turn (a failing one becomes an
    ``nbexec:`` line, the result is kept), then the sinks' ``on_end``.

    Args:
        client: an ``MLClient`` (default: :func:`connect`). The log streamer
            always connects with :func:`connect`'s credential chain.

    Raises:
        EnvironmentCheckError: what is missing to submit (nothing is submitted).
        RunDirectoryTaken: the run dir already holds files.
    """
    client = client or connect(plan.config.launch.azureml, plan.env)
    return TrainingRun(plan, sinks=sinks, finalizers=finalizers, launcher=AzureMLLauncher(client)).start()


__all__ = ["AZUREML_STATES", "AzureMLJob", "AzureMLLauncher", "last_exception", "submit_azureml"]
