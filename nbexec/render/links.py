"""Pages of runs and experiments in an MLflow tracking server's web UI.

A run has a page wherever a URL can be known: on a tracking server (an
``http(s)://`` tracking URI), or for a local store (SQLite) while an MLflow UI
that nbexec started serves it (:mod:`nbexec.tracking.ui` registers it here with
:func:`register_ui`). Otherwise :func:`server_url` is None and people are told
the ``mlflow ui`` command instead.

Every page is opened in MLflow 3's "Machine learning" view
(``?workflowType=machine_learning``): its UI otherwise shows the GenAI views
(traces, evaluations) to a browser that has not chosen, whatever the
experiment's kind tag says.
"""

from __future__ import annotations

import threading

WORKFLOW_QUERY = "workflowType=machine_learning"

_lock = threading.Lock()
_local_uis: dict[str, str] = {}  # normalized local store URI -> base URL of a UI serving it


def server_url(tracking_uri: str | None) -> str | None:
    """The base URL (no trailing ``/``) where the runs of ``tracking_uri`` have pages, or None.

    An http(s) tracking URI is its own server; a local store has one while a UI
    registered with :func:`register_ui` serves it.
    """
    if not tracking_uri:
        return None
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    with _lock:
        return _local_uis.get(tracking_uri)


def register_ui(store_uri: str, url: str) -> None:
    """Runs of the local store ``store_uri`` (as normalized by the tracking setup) are served at ``url``."""
    with _lock:
        _local_uis[store_uri] = url.rstrip("/")


def unregister_ui(store_uri: str) -> None:
    """The UI for ``store_uri`` has stopped: its runs have no pages any more."""
    with _lock:
        _local_uis.pop(store_uri, None)


def experiment_url(server: str, experiment_id: str) -> str:
    """An experiment's page on the server at ``server`` (see :func:`server_url`)."""
    return f"{server}/#/experiments/{experiment_id}?{WORKFLOW_QUERY}"


def run_url(server: str, run_id: str, experiment_id: str | None = None) -> str:
    """A run's page on the server at ``server``; under its experiment when that is known."""
    if experiment_id:
        return f"{server}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"
    return f"{server}/#/runs/{run_id}?{WORKFLOW_QUERY}"
