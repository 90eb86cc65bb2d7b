"""A stand-in for ``MLClient`` (Azure is the one part that cannot run here).

The job lives in a folder both the test process and the log streamer child
(``python -m nbexec.schedulers.azureml.stream``) see: ``state`` holds its
AzureML status, ``remote.log`` what rank 0 printed in the cloud. The test
drives the job by writing them; ``jobs.stream`` prints like the SDK's
``stream_logs_until_completion`` (run id, a ``Streaming`` header per log file,
new lines as they come, the execution summary, JobException on failure).
The child builds it through ``NBEXEC_AZUREML_TEST_CLIENT=azureml.fake_azure:make_client``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FOLDER_VAR = "FAKE_AZURE_DIR"  # not NBEXEC_*: plans drop those
JOB_NAME = "job-123"
RANK0_LOG = "user_logs/std_log_process_0.txt"
IN_PROGRESS = {"NotStarted", "Queued", "Preparing", "Starting", "Provisioning", "Running", "Finalizing",
               "CancelRequested"}


class FakeJobs:
    """``MLClient.jobs``: create_or_update, get, begin_cancel, stream."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.submitted: list[object] = []
        self.cancelled: list[str] = []

    @property
    def state(self) -> str:
        return (self.folder / "state").read_text().strip()

    def set_state(self, state: str) -> None:
        tmp = self.folder / "state.tmp"
        tmp.write_text(state)
        os.replace(tmp, self.folder / "state")

    def remote_print(self, *lines: str) -> None:
        """What rank 0 prints in the cloud."""
        with open(self.folder / "remote.log", "a") as fh:
            fh.write("".join(f"{ln}\n" for ln in lines))

    def create_or_update(self, job: object) -> object:
        self.submitted.append(job)
        self.set_state("Queued")
        (self.folder / "remote.log").touch()
        return SimpleNamespace(name=JOB_NAME, status="Queued", studio_url=f"https://studio/{JOB_NAME}")

    def get(self, name: str) -> object:
        assert name == JOB_NAME
        return SimpleNamespace(name=name, status=self.state)

    def begin_cancel(self, name: str) -> None:
        self.cancelled.append(name)
        self.set_state("Canceled")

    def stream(self, name: str) -> None:
        import sys

        out = sys.stdout  # like the SDK: whatever sys.stdout is
        out.write(f"RunId: {name}\nWeb View: https://studio/{name}\n")
        printed = 0
        while True:
            state = self.state  # read before the log: the last lines are printed after it is over
            lines = (self.folder / "remote.log").read_text().splitlines()
            if lines[printed:]:
                if printed == 0:
                    out.write(f"\nStreaming {RANK0_LOG}\n{'=' * (len(RANK0_LOG) + 10)}\n\n")
                out.write("".join(f"{ln}\n" for ln in lines[printed:]))
                printed = len(lines)
            out.flush()
            blip = self.folder / "fail_stream_once"  # a network error after some lines
            if printed and blip.exists():
                blip.unlink()
                raise ConnectionError("network blip")
            if state not in IN_PROGRESS:
                break
            time.sleep(0.05)
        out.write(f"\nExecution Summary\n=================\nRunId: {name}\n")
        if state == "Failed":
            from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, JobException

            raise JobException(message='Exception : \n {"code": "UserError", "message": "exit code 1"} ',
                               target=ErrorTarget.JOB, no_personal_data_message="failed job",
                               error_category=ErrorCategory.SYSTEM_ERROR)


def make_client(options: dict[str, Any] | None = None) -> Any:
    """The stand-in ``MLClient`` for the job folder in ``$FAKE_AZURE_DIR``."""
    return SimpleNamespace(jobs=FakeJobs(Path(os.environ[FOLDER_VAR])))
