"""A stand-in for ``MLClient`` (Azure is the one part that cannot run here).

The job lives in a folder both the test process and the log streamer child
(``python -m nbexec.schedulers.azureml.stream``) see: ``state`` holds its
AzureML status, ``remote.log`` what rank 0 printed in the cloud. The test
drives the job by writing them; ``jobs.stream`` is the SDK's real
``stream_logs_until_completion`` (what it prints, when it stops, the
JobException of a failed job), with the two Azure calls it makes (run
details, log download) answered from the folder.
The child builds it through ``NBEXEC_AZUREML_TEST_CLIENT=azureml.fake_azure:make_client``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FOLDER_VAR = "FAKE_AZURE_DIR"  # not NBEXEC_*: plans drop those
JOB_NAME = "job-123"
RANK0_LOG = "user_logs/std_log_process_0.txt"


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
        """The SDK's own ``stream_logs_until_completion``, with Azure's two calls answered from the folder."""
        from azure.ai.ml.operations import _job_ops_helper as helper

        downloaded: list[str] = []

        def download(url: str, pipeline: object, timeout: object = None) -> str:
            if url.endswith("rank1"):
                return "rank 1 line (AzureML streams rank 0's file only)\n"
            text = (self.folder / "remote.log").read_text()
            blip = self.folder / "fail_stream_once"  # a network error once some lines were shown
            if downloaded and blip.exists():
                blip.unlink()
                raise ConnectionError("network blip")
            downloaded.append(text)
            return text

        def run_details(job_name: str) -> object:
            error = SimpleNamespace(as_dict=lambda: {"code": "UserError", "message": "exit code 1"})
            return SimpleNamespace(status=self.state, warnings=None, error=error, log_files={
                RANK0_LOG: "https://blob/rank0", "user_logs/std_log_process_1.txt": "https://blob/rank1"})

        helper.download_text_from_url = download
        helper.create_requests_pipeline_with_retry = lambda *, requests_pipeline, retries=3: requests_pipeline
        helper._wait_before_polling = lambda seconds: 0.05
        job = SimpleNamespace(name=name, properties=SimpleNamespace(
            job_type="Command", services={"Studio": SimpleNamespace(endpoint=f"https://studio/{name}")},
            properties={}, outputs=None))
        helper.stream_logs_until_completion(SimpleNamespace(get_run_details=run_details), job, None,
                                            requests_pipeline=None)


def make_client(options: dict[str, Any] | None = None) -> Any:
    """The stand-in ``MLClient`` for the job folder in ``$FAKE_AZURE_DIR``."""
    return SimpleNamespace(jobs=FakeJobs(Path(os.environ[FOLDER_VAR])))
