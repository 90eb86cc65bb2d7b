"""A real ``mlflow server`` on 127.0.0.1: a run opened, logged into and finished over HTTP; then the server stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from nbexec.config import TrainingConfig
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.tracking import (
    MetricsLogger,
    TrackingWarning,
    create_training_mlflow_run,
    setup_mlflow,
    setup_mlflow_tracking_env,
    tracking_finalizer,
)

from .conftest import finished_run_dir, free_port, history

START_TIMEOUT_S = 120.0  # ~12-14 s on a 2-core machine


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """Run ``mlflow server`` with its own SQLite store and artifact root; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    argv = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'srv.db'}", "--default-artifact-root", str(root / "art"),
    ]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not healthy after {START_TIMEOUT_S} s")
            time.sleep(0.25)
        yield url
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.mark.slow
def test_run_over_http_then_the_server_goes_away(tmp_path: Path, config: TrainingConfig, plan: LaunchPlan,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    root = tmp_path / "server"
    root.mkdir()
    with mlflow_server(root) as url:
        setup = setup_mlflow(url, "served")
        assert setup.is_remote and setup.tracking_uri == url
        assert setup.ui_hint == f"{url}/#/experiments/{setup.experiment_id}?workflowType=machine_learning"
        tracked = create_training_mlflow_run(config, plan=plan)  # config's experiment: "tests"
        assert tracked.experiment_id != setup.experiment_id
        assert tracked.where() == f"{url}/#/experiments/{tracked.experiment_id}/runs/{tracked.run_id}?workflowType=machine_learning"

        # the child side, with the environment a child would get
        child_env = setup_mlflow_tracking_env(tracked, base_env={})
        assert child_env["MLFLOW_TRACKING_URI"] == url
        logger = MetricsLogger.from_env({**child_env, "RANK": "0"})
        assert logger is not None
        for step in range(20):
            logger.log({"loss": 1.0 / (step + 1)}, step=step)
        logger.close()
        assert logger.logged == 20 and logger.failed == 0

        result = finished_run_dir(plan, RunStatus.FINISHED, steps=3)
        amended = tracking_finalizer(tracked)(result)
        assert amended.mlflow_run_id == tracked.run_id

        client = MlflowClient(tracking_uri=url)
        run = client.get_run(tracked.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["training.learning_rate"] == "0.001"
        # the child's 20 values; of the events' steps 0, 10, 20 the parent added only the one it missed
        assert history(client, tracked.run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(20)] + [(20, 1.0 / 3)]
        assert [s for s, _ in history(client, tracked.run_id, "lr")] == [0, 10, 20]
        assert "result.json" in {a.path for a in client.list_artifacts(tracked.run_id)}

        second = create_training_mlflow_run(config, run_name="orphaned", tracking_uri=url)
    # the server is stopped now: the job's outcome survives, with a warning
    result = finished_run_dir_again(plan, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amended = tracking_finalizer(second)(result)
    assert replace(amended, tracking=None) == result and amended.untracked_reason  # kept, and said
    assert any(issubclass(w.category, TrackingWarning) and url in str(w.message) for w in caught)


def finished_run_dir_again(plan: LaunchPlan, tmp_path: Path):  # noqa: ANN201 - TrainingResult
    """A second run dir for the same plan (the first one already holds a job)."""
    from dataclasses import replace

    other = replace(plan, run_name="job-2", run_dir=tmp_path / "outputs" / "job-2")
    return finished_run_dir(other, RunStatus.FINISHED, steps=2)
