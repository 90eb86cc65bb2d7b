"""Fit values into MLflow's limits and send them in as few ``log_batch`` calls as allowed.

MLflow refuses a whole batch for one bad name or an over-long value, so names
are made valid and values truncated here, before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow's limits (mlflow.utils.validation), kept here so callers need not import mlflow.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_BATCH_BYTES = 900_000  # MLflow's request limit is 1 MB

_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")
_TRUNCATED = "...[truncated]"


def mlflow_key(name: str) -> str:
    """A param/metric/tag name MLflow accepts: other characters become ``_``."""
    key = _BAD_KEY_CHARS.sub("_", str(name)).strip() or "_"
    if key.startswith("/") or ".." in key.split("/"):  # MLflow rejects path-like escapes
        key = key.replace("/", "_")
    return key[:MAX_KEY]


def truncate(value: object, limit: int) -> str:
    """``str(value)`` cut to ``limit`` characters, marked when cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED


def log_batch_chunked(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Any] = (),
    params: Sequence[Any] = (),
    tags: Sequence[Any] = (),
) -> int:
    """``client.log_batch`` in as few calls as MLflow's per-call limits allow.

    Args:
        metrics, params, tags: ``mlflow.entities`` Metric / Param / RunTag objects.

    Returns:
        The number of ``log_batch`` calls made.
    """
    from mlflow.entities import Param

    calls = 0
    for chunk in _chunks(list(params) + list(tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(
            run_id,
            params=[item for item in chunk if isinstance(item, Param)],
            tags=[item for item in chunk if not isinstance(item, Param)],
        )
        calls += 1
    for chunk in _chunks(list(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
        calls += 1
    return calls


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    """Slices of at most ``size`` items and about ``MAX_BATCH_BYTES`` of text."""
    chunk: list[Any] = []
    nbytes = 0
    for item in items:
        weight = len(str(getattr(item, "key", ""))) + len(str(getattr(item, "value", ""))) + 64
        if chunk and (len(chunk) >= size or nbytes + weight > MAX_BATCH_BYTES):
            yield chunk
            chunk, nbytes = [], 0
        chunk.append(item)
        nbytes += weight
    if chunk:
        yield chunk
