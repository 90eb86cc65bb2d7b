"""``nbexec doctor``'s look at the MLflow store: reachable, writable, schema current, no run left RUNNING.

Runs a launcher left RUNNING when it died (SIGKILL) are ended KILLED here,
as the next launch would (:mod:`nbexec.tracking.abandoned`). A store that
does not exist yet is not created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec.checks import Check
from nbexec.errors import TrackingError

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig


def check_store(config: TrainingConfig) -> list[Check]:
    """The store's checks for ``config`` (nothing when tracking is off); never raises."""
    from nbexec.tracking.store import (
        check_store_reachable,
        get_client,
        normalize_tracking_uri,
        resolve_tracking_uri,
        sqlite_path,
        uri_for_display,
    )

    if not config.tracking.enabled:
        return [Check("mlflow store", True, "tracking is off (tracking.enabled: false)")]
    try:
        uri = normalize_tracking_uri(resolve_tracking_uri(config=config))
        check_store_reachable(uri)
    except TrackingError as err:
        return [Check("mlflow store", False, str(err))]
    shown = uri_for_display(uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        return [Check("mlflow store", True, f"{shown}: not created yet (the first tracked job makes it)")]
    checks = [Check("mlflow store", True, f"{shown}: reachable, writable, schema current")]
    try:
        from nbexec.tracking.abandoned import mark_abandoned_runs

        ended = mark_abandoned_runs(get_client(uri))
    except Exception as err:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
        checks.append(Check("runs left RUNNING", False, f"could not look: {type(err).__name__}: {err}"))
        return checks
    if ended:
        checks.append(Check("runs left RUNNING", True, f"ended {len(ended)} run(s) KILLED whose launcher on this "
                                                       f"host had died: {', '.join(ended)}"))
    else:
        checks.append(Check("runs left RUNNING", True, "none by a launcher that died on this host"))
    return checks
