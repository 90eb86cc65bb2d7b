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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbexec.errors import EnvironmentCheckError, RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.runner.handle import Finalizer, TrainingRun, write_run_inputs
from nbexec.runner.lines import LogLine
from nbexec.runner.sinks import Sink
from nbexec.schedulers.azureml.job import (
    build_command_job,
    require_azure_ai_ml,
    write_job_yaml,
)
from nbexec.schedulers.filetail import FileTailPump

POLL_S = 10.0  # how often AzureML is asked for the job's status
MAX_POLL_ERRORS = 30  # consecutive failures to read the status before the run is given up as FAILED
STREAM_DRAIN_S = 30.0  # once the job is over, how long the streamer may take to print the last lines
MAX_STREAM_RESTARTS = 5  # a streamer that fails while the job runs is restarted (it skips lines already shown)
STREAM_RESTART_DELAY_S = 10.0
STREAM_MODULE = "nbexec.schedulers.azureml.stream"
JOB_NAME_FILE = "job_name"  # <output_dir>/azureml/<run_name>/job_name
STREAM_LOG = "stream.log"  # the streamer's own errors (shown as launcher lines)
_EXC_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
ARM_SCOPE = "https://management.azure.com/.default"
_WORKSPACE_ENV = (("subscription_id", "AZURE_SUBSCRIPTION_ID"), ("resource_group", "AZURE_RESOURCE_GROUP"),
                  ("workspace", "AZUREML_WORKSPACE_NAME"))
_DONE = {"Completed": RunStatus.FINISHED, "Failed": RunStatus.FAILED, "Canceled": RunStatus.KILLED,
         "NotResponding": RunStatus.FAILED}


def workspace_of(options: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Subscription, resource group and workspace from the config, else the environment.

    Raises:
        EnvironmentCheckError: naming each missing value and where to give it.
    """
    found = {key: options.get(key) or env.get(var) for key, var in _WORKSPACE_ENV}
    missing = [f"launch.azureml.{key} (or ${var})" for key, var in _WORKSPACE_ENV if not found[key]]
    if missing:
        raise EnvironmentCheckError([(
            f"AzureML submission needs the workspace; missing: {', '.join(missing)}. "
            "Or use --dry-run to write the job YAML and submit it with `az ml job create -f`"
        )])
    return {k: str(v) for k, v in found.items()}


def connect(options: Mapping[str, Any], env: Mapping[str, str] | None = None, credential: Any = None) -> Any:
    """An authenticated ``MLClient`` for the configured workspace.

    Raises:
        EnvironmentCheckError: azure-ai-ml, the workspace, the compute or credentials missing.
    """
    require_azure_ai_ml()
    env = os.environ if env is None else env
    workspace = workspace_of(options, env)
    if not options.get("compute"):
        raise EnvironmentCheckError(["AzureML submission needs launch.azureml.compute: the compute cluster's name"])
    from azure.ai.ml import MLClient

    if credential is None:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        try:
            credential.get_token(ARM_SCOPE)
        except ClientAuthenticationError as err:
            raise EnvironmentCheckError([(
                "no Azure credentials found: run `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET (a service principal), or run where a managed identity is available"
            )]) from err
    return MLClient(credential, workspace["subscription_id"], workspace["resource_group"], workspace["workspace"])


class AzureMLJob:
    """A submitted job seen like a process: ``poll()`` is None until AzureML says it is over."""

    def __init__(self, client: Any, name: str, state: str) -> None:
        self.client = client
        self.name = name
        self.pid = None  # not a local process
        self.state = state
        self.error: str | None = None  # why its status could not be read
        self.fast = False  # poll every second (a cancel was asked): see hurry()
        self._errors = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.over:
                return self._code()
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + (min(POLL_S, 1.0) if self.fast else POLL_S)
            try:
                self.state = str(self.client.jobs.get(self.name).status)
                self._errors = 0
            except Exception as err:  # noqa: BLE001 - a network blip must not end the run
                self._errors += 1
                if self._errors >= MAX_POLL_ERRORS:
                    self.error = f"could not read the job's status {self._errors} times: {err}"
                    self.state = "Unknown"
            return self._code() if self.over else None

    def hurry(self) -> None:
        """Poll every second from now on (a cancel was asked)."""
        with self._lock:
            self.fast, self._next = True, 0.0

    @property
    def over(self) -> bool:
        return self.state in _DONE or self.error is not None

    def _code(self) -> int:
        return 0 if self.state == "Completed" else 1

    def wait(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(min(POLL_S, 1.0))
        return code


class AzureMLRun(TrainingRun):
    """A training job running as an AzureML command job. Create it with :func:`submit_azureml`.

    The same handle as a local run: status (polled every 10 s), wait, result,
    cancel, ``lines()``, sinks and finalizers. Rank 0's output (the log file
    AzureML streams) is followed by ``python -m nbexec.schedulers.azureml.stream``,
    a child process running ``MLClient.jobs.stream``, into ``logs/rank0.log``;
    AzureML's own lines go to ``logs/launcher.log``. Metrics stay in the
    job's MLflow run in the workspace (``studio_url``).
    """

    def __init__(self, plan: LaunchPlan, client: Any, sinks: Sequence[Sink] = (),
                 finalizers: Sequence[Finalizer] = ()) -> None:
        super().__init__(plan, sinks=sinks, finalizers=finalizers)
        self.client = client
        self.job_name: str | None = None
        self.studio_url: str | None = None
        self._job: AzureMLJob | None = None
        self._streamer: subprocess.Popen[bytes] | None = None
        self._over_since: float | None = None
        self._restarts = 0
        self._restart_at: float | None = None

    @property
    def azureml_state(self) -> str | None:
        """AzureML's status name: Queued, Running, ... Completed, Failed, Canceled (None before submission)."""
        return self._job.state if self._job else None

    def _start(self) -> None:
        plan = self.plan
        path: Path = write_job_yaml(plan)
        job = build_command_job(plan, config_file=path.with_name("config.yaml"))
        self.started_at = time.time()
        submitted = self.client.jobs.create_or_update(job)
        self.job_name, self.studio_url = submitted.name, getattr(submitted, "studio_url", None)
        (path.parent / JOB_NAME_FILE).write_text(f"{self.job_name}\n")
        self._job = self._proc = AzureMLJob(self.client, submitted.name, str(getattr(submitted, "status", "")))
        self._stream_log = stream_log = path.parent / STREAM_LOG
        self._pump = FileTailPump(  # type: ignore[assignment]
            plan.run_dir, self._dispatcher, on_events=self._record_events,
            dirs=lambda: [plan.run_dir], launcher_files=lambda: [stream_log],
        )
        self._streamer = _start_streamer(plan, submitted.name, stream_log)
        self._status = RunStatus.RUNNING
        self._dispatcher.start(self)
        self._thread = threading.Thread(target=self._supervise, name=f"nbexec-azureml-{self.job_name}",
                                        daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        assert self._pump is not None and self._job is not None
        try:
            self._pump.run(self._job_over)
        finally:
            _stop(self._streamer)
            self._finish(self._job.wait())

    def _job_over(self) -> bool:
        """Over once AzureML says so and the streamer has printed the last lines (bounded wait)."""
        assert self._job is not None
        if self._job.poll() is None:
            self._keep_streaming()
            return False
        if self._streamer is None or self._streamer.poll() is not None:
            return True
        self._over_since = self._over_since or time.monotonic()
        return time.monotonic() - self._over_since > STREAM_DRAIN_S

    def _keep_streaming(self) -> None:
        """Restart a streamer that died (a network error) while the job runs, ``MAX_STREAM_RESTARTS`` times."""
        proc = self._streamer
        code = proc.poll() if proc is not None else None
        if code in (None, 0) or self._restarts >= MAX_STREAM_RESTARTS:  # streaming, or the stream has ended
            return
        now = time.monotonic()
        if self._restart_at is None:
            self._restart_at = now + STREAM_RESTART_DELAY_S
        if now < self._restart_at:
            return
        self._restarts += 1
        self._restart_at = None
        with open(self._stream_log, "a") as fh:
            fh.write(f"nbexec: restarting the log streamer ({self._restarts}/{MAX_STREAM_RESTARTS})\n")
        assert self.job_name is not None
        self._streamer = _start_streamer(self.plan, self.job_name, self._stream_log)

    def _final_status(self, exit_code: int) -> RunStatus:
        state = self.azureml_state
        if self._cancel_requested or state == "Canceled":
            return RunStatus.KILLED
        return RunStatus.FINISHED if state == "Completed" and exit_code == 0 else RunStatus.FAILED

    def _root_cause(self, exit_code: int) -> RootCause:
        where = f"; see {self.studio_url or 'the job in AzureML studio'}"
        job = self._job
        if job is not None and job.error:
            return RootCause(rank=None, exit_code=None, message=f"AzureML job {self.job_name}: {job.error}{where}")
        exc_type, message, trace = last_exception(self.lines(0))
        rank = 0 if exc_type else None
        what = message if exc_type else f"AzureML job {self.job_name} {self.azureml_state}"
        return RootCause(rank=rank, exit_code=None, exc_type=exc_type, message=what + where, traceback=trace)

    def cancel(self, grace: float = 10.0) -> None:
        """Ask AzureML to cancel the job; returns once it reports it over (or ``grace`` + 60 s).

        Idempotent; the run ends KILLED.
        """
        with self._lock:
            if self._done.is_set() or self._job is None:
                return
            self._cancel_requested = True
        self._job.hurry()
        self.client.jobs.begin_cancel(self.job_name)
        self._done.wait(grace + 60.0)

    def __repr__(self) -> str:
        return (f"<AzureMLRun {self.name!r} job {self.job_name} {self.azureml_state or self._status.value}, "
                f"{self.plan.config.launch.nnodes} node(s) x {self.plan.nproc}x{self.plan.backend}>")


def _start_streamer(plan: LaunchPlan, job_name: str, stream_log: Path) -> subprocess.Popen[bytes] | None:
    """``python -m nbexec.schedulers.azureml.stream``: workspace options on stdin, its errors in ``stream_log``."""
    import json

    from nbexec.schedulers.azureml.stream import TEST_CLIENT_VAR

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
                   client: Any = None) -> AzureMLRun:
    """Submit ``plan`` as an AzureML command job; returns its handle at once (status RUNNING).

    Lines of rank 0 reach ``sinks`` and ``lines()`` while the job runs; once it
    is over, each finalizer gets the result in turn (a failing one becomes an
    ``nbexec:`` line, the result is kept), then the sinks' ``on_end``.

    Args:
        client: an ``MLClient`` (default: :func:`connect`). The log streamer
            always connects with :func:`connect`'s credential chain.

    Raises:
        EnvironmentCheckError: what is missing to submit (nothing is submitted).
        FileExistsError: the run dir already holds files.
    """
    client = client or connect(plan.config.launch.azureml, plan.env)
    write_run_inputs(plan)
    run = AzureMLRun(plan, client, sinks=sinks, finalizers=finalizers)
    run._start()
    return run


__all__ = ["AzureMLJob", "AzureMLRun", "connect", "last_exception", "submit_azureml", "workspace_of"]
