"""The lineage record as namespaced MLflow tags, and back.

Each field is one tag ``nbexec.lineage.<section>.<field>``: text as is,
numbers, booleans and mappings as JSON (so they come back with their type).
``nbexec.lineage.sections`` lists the sections present and
``nbexec.lineage.missing`` what could not be found, so reading the tags
gives the same record.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from nbexec.errors import TrackingError
from nbexec.lineage.record import LINEAGE_VERSION, SECTIONS, Lineage

PREFIX = "nbexec.lineage."


def lineage_to_tags(lineage: Lineage) -> dict[str, str]:
    """The tags for ``lineage`` (nothing is sent)."""
    tags = {f"{PREFIX}version": str(LINEAGE_VERSION)}
    present = []
    for name, cls in SECTIONS.items():
        section = getattr(lineage, name)
        if section is None:
            continue
        present.append(name)
        for f in fields(cls):
            value = getattr(section, f.name)
            if value is None:
                continue
            tags[f"{PREFIX}{name}.{f.name}"] = value if _is_text(cls, f.name) else json.dumps(value, sort_keys=True)
    tags[f"{PREFIX}sections"] = json.dumps(present)
    tags[f"{PREFIX}missing"] = json.dumps(list(lineage.missing))
    return tags


def lineage_from_tags(tags: Mapping[str, str]) -> Lineage | None:
    """The record the tags hold, or None when they hold none."""
    if f"{PREFIX}sections" not in tags:
        return None
    kwargs: dict[str, Any] = {}
    for name in json.loads(tags[f"{PREFIX}sections"]):
        cls = SECTIONS.get(name)
        if cls is None:
            continue  # a section a newer nbexec wrote
        values = {}
        for f in fields(cls):
            raw = tags.get(f"{PREFIX}{name}.{f.name}")
            if raw is not None:
                values[f.name] = raw if _is_text(cls, f.name) else json.loads(raw)
        kwargs[name] = cls(**values)
    return Lineage(**kwargs, missing=tuple(json.loads(tags.get(f"{PREFIX}missing", "[]"))))


def apply_lineage_tags(lineage: Lineage, run: Any, *, tracking_uri: str | None = None) -> dict[str, str]:
    """Write ``lineage`` to an MLflow run as ``nbexec.lineage.*`` tags.

    Args:
        lineage: the record.
        run: the run: its id, a ``TrackedRun``, an ``mlflow.entities.Run`` or a
            ``TrainingResult`` with ``mlflow_run_id``.
        tracking_uri: its store (default: the run's own, else ``setup_mlflow()``'s).

    Returns:
        The tags that were set.

    Raises:
        TrackingError: no run id, or the store cannot be reached.
    """
    from mlflow.entities import RunTag

    from nbexec.tracking.batching import log_batch_chunked

    run_id, client = _client(run, tracking_uri)
    tags = lineage_to_tags(lineage)
    try:
        log_batch_chunked(client, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as err:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
        raise TrackingError(f"could not tag MLflow run {run_id} with its lineage: {err}") from err
    return tags


def read_lineage_tags(run: Any, *, tracking_uri: str | None = None) -> Lineage | None:
    """The lineage record stored on an MLflow run (None when it has none).

    Raises:
        TrackingError: no run id, or the store cannot be reached.
    """
    run_id, client = _client(run, tracking_uri)
    try:
        tags = client.get_run(run_id).data.tags
    except Exception as err:  # noqa: BLE001
        raise TrackingError(f"could not read MLflow run {run_id}: {err}") from err
    return lineage_from_tags(tags)


def _client(run: Any, tracking_uri: str | None) -> tuple[str, Any]:
    from nbexec.tracking.store import get_client, setup_mlflow

    run_id = run if isinstance(run, str) else (
        getattr(run, "run_id", None) or getattr(run, "mlflow_run_id", None)
        or getattr(getattr(run, "info", None), "run_id", None)
    )
    if not run_id:
        raise TrackingError(f"no MLflow run id in {run!r}: pass a run id, a TrackedRun or a tracked TrainingResult")
    uri = tracking_uri or getattr(run, "tracking_uri", None) or setup_mlflow().tracking_uri
    return str(run_id), get_client(uri)


def _is_text(cls: type, name: str) -> bool:
    hint = typing.get_type_hints(cls)[name]
    if hint is str:
        return True
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return union and set(typing.get_args(hint)) <= {str, type(None)}
