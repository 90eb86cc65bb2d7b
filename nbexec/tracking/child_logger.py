"""Child side: rank 0 logs metrics into the parent's MLflow run, batched, off the training loop.

    logger = MetricsLogger.from_env()        # None unless rank 0 with MLFLOW_RUN_ID set
    logger.log({"loss": 0.3}, step=10)      # a dict copy and a put_nowait; never blocks
    logger.close()                          # flushes (bounded wait)

A background thread sends ``MlflowClient.log_batch`` calls every second or
every 500 values. If the store fails, training carries on: one warning, the
batch is dropped, and the parent logs the missed points from ``events.jsonl``
at the end. mlflow is imported in that thread, so not even the import slows
the loop.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import nbexec.contract as contract
from nbexec.tracking.batching import MAX_METRICS_PER_BATCH, mlflow_key
from nbexec.tracking.store import TrackingWarning
from nbexec.tracking.tags import TAG_CHILD_LOGGED

FLUSH_INTERVAL_S = 1.0
BATCH_SIZE = 500
MAX_QUEUE = 10_000  # log() calls waiting; past that new values are dropped (events.jsonl keeps them)
CLOSE_TIMEOUT_S = 30.0
# "0": the parent logs the metrics from events (MlflowMetricsSink); the child must not too.
ENV_CHILD_METRICS = contract.ENV_CHILD_METRICS

_Item = tuple[dict[str, float], dict[str, int], int]  # values, steps, timestamp (ms)


class MetricsLogger:
    """Batches metric values into the MLflow run ``run_id`` from a background thread.

    Args:
        run_id: the run (default ``$MLFLOW_RUN_ID``); without one the logger does nothing.
        tracking_uri: the store (default ``$MLFLOW_TRACKING_URI``, else MLflow's default).
        flush_interval_s: longest time a value waits before it is sent.
        batch_size: values per ``log_batch`` call (at most MLflow's 1,000).
        max_queue: pending ``log`` calls kept; more are dropped and counted.

    Attributes:
        logged, dropped, failed: values sent, dropped (full queue), lost to store errors.
        calls: ``log_batch`` calls made.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        tracking_uri: str | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        batch_size: int = BATCH_SIZE,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.flush_interval_s = flush_interval_s
        self.batch_size = max(1, min(batch_size, MAX_METRICS_PER_BATCH))
        self.logged = self.dropped = self.failed = self.calls = 0
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)
        self._counters: dict[str, int] = {}
        self._stop = threading.Event()
        self._warned: set[str] = set()
        self._client: Any = None
        self._tagged = False
        self._thread: threading.Thread | None = None
        if self.run_id:
            self._thread = threading.Thread(target=self._run, name="nbexec-mlflow-metrics", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> MetricsLogger | None:
        """A logger for this process if it should log: global rank 0, ``MLFLOW_RUN_ID`` set,
        and the parent did not take metric logging on itself (``NBEXEC_MLFLOW_CHILD_METRICS=0``)."""
        env = os.environ if env is None else env
        if not env.get("MLFLOW_RUN_ID") or env.get("RANK", "0") != "0":
            return None
        if env.get(ENV_CHILD_METRICS) == "0":
            return None
        return cls(env["MLFLOW_RUN_ID"], tracking_uri=env.get("MLFLOW_TRACKING_URI"), **options)

    @property
    def enabled(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def log(self, metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None) -> None:
        """Queue metric values; returns at once (drops them if the queue is full).

        Without ``step``, each metric counts its own steps 0, 1, 2, ... (as the
        parent does when it reads events without steps). ``timestamp`` is in
        seconds (default: now).
        """
        if not self.enabled:
            return
        values: dict[str, float] = {}
        steps: dict[str, int] = {}
        for name, value in metrics.items():
            key = mlflow_key(name)
            count = self._counters.get(key, 0)
            self._counters[key] = count + 1
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                continue
            steps[key] = int(step) if step is not None else count
        if not values:
            return
        try:
            stamp = time.time() if timestamp is None else timestamp
            self._queue.put_nowait((values, steps, int(stamp * 1000)))
        except queue.Full:
            self.dropped += len(values)
            self._warn_once("full", "MLflow logging falls behind; some values were not sent "
                            "(they are in events.jsonl, and the parent logs them at the end)")

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued and stop the thread; waits at most ``timeout`` seconds. Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._warn_once("close", f"MLflow logging did not finish within {timeout:g} s; "
                            "the parent logs the rest from events.jsonl")
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the background thread -----------------------------------------------------

    def _connect(self) -> None:
        """Import mlflow and open the client now, in this thread, not at the first flush:
        a short script may end before then, and at interpreter shutdown mlflow can no
        longer start its own threads ("can't register atexit after shutdown")."""
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        except Exception:  # noqa: BLE001 - _send retries and warns
            self._client = None

    def _run(self) -> None:
        self._connect()
        pending: list[tuple[str, float, int, int]] = []
        last_flush = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            try:
                if stopping:  # drain what is queued, then stop
                    item: _Item | None = self._queue.get_nowait()
                else:
                    wait = self.flush_interval_s - (time.monotonic() - last_flush)
                    item = self._queue.get(timeout=min(max(wait, 0.01), 0.2))
            except queue.Empty:
                item = None
            if item is not None:
                values, steps, ts = item
                pending.extend((k, v, ts, steps[k]) for k, v in values.items())
            while len(pending) >= self.batch_size:
                self._send(pending[: self.batch_size])
                del pending[: self.batch_size]
                last_flush = time.monotonic()
            done = stopping and item is None
            if time.monotonic() - last_flush >= self.flush_interval_s or done:
                if pending:
                    self._send(pending)
                    pending = []
                last_flush = time.monotonic()
            if done:
                return

    def _send(self, points: list[tuple[str, float, int, int]]) -> None:
        try:
            from mlflow.entities import Metric, RunTag

            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            # The tag goes with the first batch: the parent then sends only what is missing.
            tags = [] if self._tagged else [RunTag(TAG_CHILD_LOGGED, "true")]
            self.calls += 1
            self._client.log_batch(self.run_id, metrics=[Metric(*p) for p in points], tags=tags)
            self._tagged = True
            self.logged += len(points)
        except Exception as err:  # noqa: BLE001 - a store failure must not stop training
            self.failed += len(points)
            lines = str(err).strip().splitlines()
            self._warn_once("store", f"MLflow logging to {self.tracking_uri or 'the default store'} failed "
                            f"({type(err).__name__}: {lines[0] if lines else ''}); training goes on, the "
                            "values are in events.jsonl and the parent logs them at the end")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, TrackingWarning, stacklevel=2)
