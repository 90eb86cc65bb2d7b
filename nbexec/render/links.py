"""Pages of runs and experiments in an MLflow tracking server's web UI.

A local store (SQLite, a folder) has no pages: there, :func:`server_url` is None
and people are told the ``mlflow ui`` command instead.
"""

from __future__ import annotations


def server_url(tracking_uri: str | None) -> str | None:
    """The server's base URL (no trailing ``/``) when ``tracking_uri`` is an http(s) server; None otherwise."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return None


def experiment_url(server: str, experiment_id: str) -> str:
    """An experiment's page on the server at ``server`` (see :func:`server_url`)."""
    return f"{server}/#/experiments/{experiment_id}"


def run_url(server: str, run_id: str, experiment_id: str | None = None) -> str:
    """A run's page on the server at ``server``; under its experiment when that is known."""
    if experiment_id:
        return f"{experiment_url(server, experiment_id)}/runs/{run_id}"
    return f"{server}/#/runs/{run_id}"
