"""What the parent sends to MLflow when a job ends: metric history, artifacts, the failure note.

Each function does one MLflow step and may raise; :meth:`TrackedRun.finish`
runs them in turn and turns failures into one warning.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbexec.contract as contract
from nbexec.events import Event, read_events
from nbexec.tracking.batching import MAX_TAG_VALUE, log_batch_chunked, mlflow_key, truncate
from nbexec.tracking.tags import TAG_CHILD_LOGGED

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nbexec.redact import Scrubber
    from nbexec.result import TrainingResult

# The run-dir files uploaded as artifacts (result.json is written from the result itself).
INPUT_FILES = (contract.CONFIG_FILE, contract.COMMAND_FILE, contract.EVENTS_FILE)
TRACEBACK_LINES = 60

Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def metric_points(events: Iterable[Event]) -> list[Point]:
    """The metric history in ``metrics`` events of rank 0, in order.

    An event without a ``step`` counts per metric (0, 1, 2, ...), as the
    child-side :class:`~nbexec.tracking.child_logger.MetricsLogger` does.
    """
    points: list[Point] = []
    counters: dict[str, int] = {}
    for ev in events:
        if ev.get("kind") != "metrics" or ev.get("rank", 0) not in (0, None):
            continue
        values = ev.get("metrics")
        if not isinstance(values, dict):
            continue
        step = ev.get("step")
        stamp = ev.get("time")
        ts = int(stamp * 1000) if isinstance(stamp, (int, float)) else 0
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = mlflow_key(name)
            count = counters.get(key, 0)
            counters[key] = count + 1
            points.append((key, float(value), ts, int(step) if isinstance(step, int) else count))
    return points


def log_metric_history(client: MlflowClient, run_id: str, result: TrainingResult) -> int:
    """Log the metrics of ``events.jsonl`` that the run does not have yet.

    When the child logged (tag ``nbexec.child_logged``), only the points it
    missed (a store that went away, a full queue) are sent: a (metric, step)
    already in MLflow is skipped. Otherwise the whole history goes in one
    ``log_batch`` call (more only past MLflow's 1,000 metrics per call).

    Returns:
        The number of metric values logged.
    """
    from mlflow.entities import Metric

    points = metric_points(read_events(result.run_dir / contract.EVENTS_FILE))
    seen_keys = {p[0] for p in points}
    for name, value in result.metrics.items():  # last values known without an event history
        key = mlflow_key(name)
        if key not in seen_keys and isinstance(value, (int, float)) and not isinstance(value, bool):
            points.append((key, float(value), int(result.ended_at * 1000), 0))
    if not points:
        return 0
    run = client.get_run(run_id)
    if run.data.tags.get(TAG_CHILD_LOGGED) == "true":
        logged: set[tuple[str, int]] = set()
        for key in {p[0] for p in points}:
            logged.update((key, m.step) for m in client.get_metric_history(run_id, key))
        points = [p for p in points if (p[0], p[3]) not in logged]
    metrics = [Metric(key, value, ts, step) for key, value, ts, step in points]
    log_batch_chunked(client, run_id, metrics=metrics)
    return len(metrics)


def upload_artifacts(
    client: MlflowClient,
    run_id: str,
    run_dir: Path,
    scrubber: Scrubber,
    result: TrainingResult | None = None,
) -> list[str]:
    """Upload config.yaml, command.txt, events.jsonl, logs/ and result.json.

    Files are copied to a staging folder first with every known secret value
    replaced, so nothing secret reaches the artifact store even if a script
    printed it. ``result.json`` is written from ``result`` (the run dir's own
    copy is written only after the finalizers).

    Returns:
        The artifact paths uploaded.
    """
    with tempfile.TemporaryDirectory(prefix="nbexec-artifacts-") as tmp:
        stage = Path(tmp)
        uploaded: list[str] = []
        for name in INPUT_FILES:
            src = run_dir / name
            if src.is_file():
                scrubber.copy_file(src, stage / name)
                uploaded.append(name)
        log_dir = run_dir / contract.LOG_DIR
        if log_dir.is_dir():
            for src in sorted(p for p in log_dir.rglob("*") if p.is_file()):
                rel = src.relative_to(run_dir)
                scrubber.copy_file(src, stage / rel)
                uploaded.append(rel.as_posix())
        if result is not None:
            data = replace(result, mlflow_run_id=run_id).to_dict()
            text = scrubber.text(json.dumps(data, indent=2, default=str))
            (stage / contract.RESULT_FILE).write_text(text)
            uploaded.append(contract.RESULT_FILE)
        if uploaded:
            client.log_artifacts(run_id, str(stage))
        return uploaded


def failure_note(status: str, headline: str, scrubber: Scrubber, *, traceback: str = "",
                 run_dir: Path | None = None, log_paths: Sequence[tuple[str, Any]] = ()) -> str:
    """The run description (``mlflow.note.content``) for a FAILED or KILLED run, Markdown."""
    parts = [f"**{status}**: {headline}"]
    if run_dir is not None:
        parts.append(f"Run directory: `{run_dir}`")
    if log_paths:
        parts.append("Logs (also under the run's artifacts, `logs/`):\n" + "\n".join(
            f"- {name}: `{path}`" for name, path in log_paths))
    if traceback.strip():
        tail = "\n".join(traceback.rstrip().splitlines()[-TRACEBACK_LINES:])
        parts.append(f"```\n{tail}\n```")
    return truncate(scrubber.text("\n\n".join(parts)), MAX_TAG_VALUE)


def nested_runs(client: MlflowClient, run_id: str, experiment_id: str) -> list[Any]:
    """The runs nested under ``run_id``, in any experiment of the store.

    Ranks make them with ``mlflow.start_run(nested=True)`` or HF's
    ``MLFLOW_NESTED_RUN`` (in the job's experiment), or through a library
    that creates a run of its own, e.g. Lightning's ``MLFlowLogger`` in its
    ``lightning_logs`` experiment (nested by :mod:`nbexec.child.mlflow_context`).
    """
    experiments = {experiment_id} | {e.experiment_id for e in client.search_experiments(max_results=1000)}
    return list(client.search_runs(sorted(experiments), filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
                                   max_results=1000))


def end_nested_runs(client: MlflowClient, runs: Sequence[Any], status: str) -> int:
    """End the nested runs a rank left RUNNING, with the job's status.

    A rank that is cancelled (SIGTERM) or crashes never reaches MLflow's own
    ``end_run`` (nor Lightning's ``finalize``); its runs would stay RUNNING forever.

    Returns:
        How many runs were ended.
    """
    left = [run for run in runs if run.info.status == "RUNNING"]
    for run in left:
        client.set_terminated(run.info.run_id, status=status)
    return len(left)


def logged_metrics(client: MlflowClient, run_id: str, nested: Sequence[Any] = ()) -> dict[str, float]:
    """The latest value of every metric in the run, whichever process logged it.

    Metrics of ``nested`` runs fill in names the run itself does not have
    (a Lightning logger left at its defaults logs into a run of its own).
    System metrics (``system/...``: CPU, memory, GPU use) are not the training's
    results: they stay in MLflow's "System metrics", out of the summary.
    """
    metrics = {k: v for k, v in client.get_run(run_id).data.metrics.items() if not k.startswith(SYSTEM_PREFIX)}
    for run in nested:
        for key, value in run.data.metrics.items():
            if not key.startswith(SYSTEM_PREFIX):
                metrics.setdefault(key, value)
    return metrics


SYSTEM_PREFIX = "system/"  # MLflow's prefix for system metrics (its own monitor's, and nbexec's)
