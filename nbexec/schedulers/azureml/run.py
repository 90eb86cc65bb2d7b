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
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbexec.errors import (
    EnvironmentCheckError,
    RootCause,
    TrainingCancelled,
    TrainingFailed,
)
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.lines import LogLine
from nbexec.schedulers.azureml.job import (
    build_command_job,
    require_azure_ai_ml,
    write_job_yaml,
)

POLL_S = 10.0
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


class AzureMLRun:
    """A submitted AzureML job with the :class:`~nbexec.runner.handle.TrainingRun` interface.

    Lines stay in AzureML (``lines()`` is empty; ``studio_url`` opens them);
    the status is polled every 10 s.
    """

    def __init__(self, plan: LaunchPlan, client: Any, job: Any) -> None:
        self.plan = plan
        self.client = client
        self.job_name: str = job.name
        self.studio_url: str | None = getattr(job, "studio_url", None)
        self.tracking: Any = None
        self.started_at = time.time()
        self._state = str(getattr(job, "status", "NotStarted"))
        self._status = RunStatus.RUNNING
        self._result: TrainingResult | None = None
        self._done = threading.Event()
        self._cancel_requested = False
        threading.Thread(target=self._follow, name=f"nbexec-azureml-{self.job_name}", daemon=True).start()

    name = property(lambda self: self.plan.run_name)
    run_dir = property(lambda self: self.plan.run_dir)
    status = property(lambda self: self._status)
    events: list = property(lambda self: [])  # type: ignore[assignment]
    metrics = property(lambda self: {})

    @property
    def azureml_state(self) -> str:
        return self._state

    def _follow(self) -> None:
        while True:
            self._state = str(self.client.jobs.get(self.job_name).status)
            status = _DONE.get(self._state)
            if status is not None:
                break
            time.sleep(POLL_S if not self._cancel_requested else 1.0)
        cause = None
        if status is RunStatus.FAILED:
            cause = RootCause(rank=None, exit_code=None,
                              message=f"AzureML job {self.job_name} {self._state}; see {self.studio_url or 'the studio'}")
        self._result = TrainingResult(
            run_name=self.plan.run_name, run_dir=self.plan.run_dir, status=status, exit_code=None,
            started_at=self.started_at, ended_at=time.time(), nproc=self.plan.nproc, backend=self.plan.backend,
            config_hash=self.plan.config.config_hash, command=self.plan.argv, root_cause=cause,
        )
        self._status = status
        self._done.set()

    def lines(self, rank: int | None = 0, n: int | None = None) -> list[LogLine]:
        return []

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunStatus:
        if not self._done.wait(timeout):
            raise TimeoutError(f"AzureML job {self.job_name} still running after {timeout} s")
        return self._status

    def result(self, timeout: float | None = None) -> TrainingResult:
        self.wait(timeout)
        assert self._result is not None
        if self._result.status is RunStatus.KILLED:
            raise TrainingCancelled(f"AzureML job {self.job_name} was cancelled")
        if self._result.status is RunStatus.FAILED:
            assert self._result.root_cause is not None
            raise TrainingFailed(run_name=self.name, root_cause=self._result.root_cause, log_paths={}, log_tail=[])
        return self._result

    def cancel(self, grace: float = 10.0) -> None:
        """Ask AzureML to cancel the job; returns once it reports Canceled (or ``grace`` + 60 s)."""
        if self._done.is_set():
            return
        self._cancel_requested = True
        self.client.jobs.begin_cancel(self.job_name)
        self._done.wait(grace + 60.0)

    def __repr__(self) -> str:
        return f"<AzureMLRun {self.name!r} job {self.job_name} {self._state}>"


def submit_azureml(plan: LaunchPlan, *, sinks: Sequence[Any] = (), finalizers: Sequence[Any] = (),
                   client: Any = None) -> AzureMLRun:
    """Submit ``plan`` as an AzureML command job; returns its handle.

    Raises:
        EnvironmentCheckError: what is missing to submit (nothing is submitted).
    """
    client = client or connect(plan.config.launch.azureml, plan.env)
    path: Path = write_job_yaml(plan)
    job = build_command_job(plan, config_file=path.with_name("config.yaml"))
    submitted = client.jobs.create_or_update(job)
    return AzureMLRun(plan, client, submitted)


__all__ = ["AzureMLRun", "connect", "submit_azureml", "workspace_of"]
