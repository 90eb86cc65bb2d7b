"""Runs left RUNNING by a launcher that died without ending them, found and ended later.

A launcher killed with SIGKILL (a kernel killed by the OOM killer, ``kill -9``)
cannot end its MLflow run: it would stay RUNNING forever. Every run nbexec
opens carries the launcher's host, pid and process start time, so a later
nbexec on the same host can tell a live launcher from a dead one (a reused
pid has another start time). The next local launch against the store ends
such runs KILLED in the background, and ``nbexec doctor`` lists and ends them.
Runs of launchers on other hosts are never touched.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TAG_HOST = "nbexec.launcher.host"
TAG_PID = "nbexec.launcher.pid"
TAG_STARTED = "nbexec.launcher.started"  # the launcher's process start time (seconds since the epoch)
START_TOLERANCE_S = 1.0


def launcher_tags() -> dict[str, str]:
    """Tags that identify this process as the launcher of a run."""
    import psutil

    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
            TAG_STARTED: f"{psutil.Process().create_time():.3f}"}


def find_abandoned_runs(client: MlflowClient) -> list[Any]:
    """RUNNING runs opened on this host by a launcher that is gone."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    if not experiments:
        return []
    host = socket.gethostname().replace("'", "")
    running = client.search_runs(
        experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'",
        max_results=1000,
    )
    return [run for run in running if not _launcher_alive(run.data.tags)]


def mark_abandoned_runs(client: MlflowClient) -> list[str]:
    """End every abandoned run (and the runs nested under it) KILLED, saying why. Returns their ids."""
    from nbexec.tracking.finish import end_nested_runs, nested_runs
    from nbexec.tracking.tags import TAG_FAILURE

    ended = []
    for run in find_abandoned_runs(client):
        tags = run.data.tags
        why = (f"its launcher (pid {tags.get(TAG_PID)} on {tags.get(TAG_HOST)}) ended without closing it, "
               "e.g. killed with SIGKILL; marked KILLED by a later nbexec")
        client.set_tag(run.info.run_id, TAG_FAILURE, why)
        client.set_tag(run.info.run_id, "nbexec.status", "KILLED")
        client.set_terminated(run.info.run_id, status="KILLED")
        end_nested_runs(client, nested_runs(client, run.info.run_id, run.info.experiment_id), "KILLED")
        ended.append(run.info.run_id)
    return ended


def _launcher_alive(tags: dict[str, str]) -> bool:
    import psutil

    try:
        pid, started = int(tags[TAG_PID]), float(tags[TAG_STARTED])
        return abs(psutil.Process(pid).create_time() - started) <= START_TOLERANCE_S
    except (KeyError, ValueError):
        return True  # not enough to tell: leave it alone
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
