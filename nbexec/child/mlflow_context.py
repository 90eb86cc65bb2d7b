"""An MLflow run-context plugin: a run a rank creates itself is nested under the job's run.

MLflow asks every registered context provider for tags when a run is created
through ``mlflow.start_run()`` or by libraries that resolve tags the same way
(Lightning's ``MLFlowLogger`` does). Inside a rank of an nbexec job
(``NBEXEC_MLFLOW_RUN_ID`` set by the worker bootstrap), this provider adds
``mlflow.parentRunId`` = the job's run, so such a run shows under the job's
run in the MLflow UI, and the parent ends it with the job if the rank could
not (a cancelled or crashed rank never reaches MLflow's own ``end_run``).
Anywhere else it adds nothing. Registered through the
``mlflow.run_context_provider`` entry point; imports nothing heavy.
"""

from __future__ import annotations

import os

import nbexec.contract as contract

TAG_PARENT = "mlflow.parentRunId"
TAG_JOB_RUN = "nbexec.job_run_id"


class JobRunContext:
    """Duck-typed ``mlflow.tracking.context.RunContextProvider`` (no mlflow import needed)."""

    def in_context(self) -> bool:
        return bool(os.environ.get(contract.ENV_JOB_RUN_ID))

    def tags(self) -> dict[str, str]:
        job_run = os.environ[contract.ENV_JOB_RUN_ID]
        return {TAG_PARENT: job_run, TAG_JOB_RUN: job_run}
