"""In a real kernel: which experiment a ``%train`` goes to, and ``%mlflow_ui`` making runs links.

One kernel for the module (tests in file order); jobs are a 1-process fixture script, so each
takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from conftest import FIXTURE_SCRIPTS
from kernel_driver import Kernel

from nbexec.tracking.ui import start_ui

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OK_SCRIPT = FIXTURE_SCRIPTS / "ok.py"


def _experiment_of(tracking_uri: str, run_id: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def _train(kernel: Kernel, var: str, options: str, out: Path) -> str:
    """Run ``%train`` on the fixture script; returns the cell's HTML (the summary)."""
    cell = kernel.run(f"{var} = %train --entrypoint {OK_SCRIPT} --nproc 1 --output {out} {options}", timeout=180)
    assert cell.ok, cell.error
    return "\n".join(m["content"].get("data", {}).get("text/html", "") for m in cell.displays())


def _value(kernel: Kernel, expression: str) -> str:
    cell = kernel.run(f"print({expression})")
    assert cell.ok, cell.error
    return cell.stdout.strip()


def test_a_cell_without_experiment_goes_to_the_configs_not_the_previous_cells(
    kernel: Kernel, tmp_path: Path, session_tracking_store: str
) -> None:
    _train(kernel, "first", "--experiment sticky-ner", tmp_path)
    summary = _train(kernel, "second", "", tmp_path)  # the config names none: its default, "nbexec"

    first, second = _value(kernel, "first.mlflow_run_id"), _value(kernel, "second.mlflow_run_id")
    assert _experiment_of(session_tracking_store, first) == "sticky-ner"
    assert _experiment_of(session_tracking_store, second) == "nbexec"
    assert "in experiment <b>nbexec</b>" in summary  # the summary says where it went


def test_mlflow_ui_makes_runs_links_and_stops(kernel: Kernel, tmp_path: Path, session_tracking_store: str) -> None:
    ui = start_ui(session_tracking_store)  # as `nbexec ui` in a terminal would (the kernel finds it)
    group = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
    try:
        cell = kernel.run("%mlflow_ui", timeout=120)
        assert cell.ok, cell.error
        shown = cell.result_text or ""
        assert ui.url in shown and f"pid {ui.pid}" in shown
        result_html = next(m["content"]["data"]["text/html"] for m in cell.of_type("execute_result"))
        assert f'href="{ui.url}/#/experiments?workflowType=machine_learning"' in result_html
        assert "already running" in result_html  # found, not started a second time

        summary = _train(kernel, "linked", "--experiment linked", tmp_path)
        run_id = _value(kernel, "linked.mlflow_run_id")
        assert f'href="{ui.url}/#/experiments/' in summary and f"/runs/{run_id}?workflowType=machine_learning" in summary

        stopped = kernel.run("%mlflow_ui --stop", timeout=120)
        assert stopped.ok, stopped.error
        assert f"stopped the MLflow UI at {ui.url}" in stopped.stdout
        _, alive = psutil.wait_procs(group, timeout=30)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
        after = _train(kernel, "unlinked", "--experiment linked", tmp_path)
        assert ui.url not in after and "mlflow ui --backend-store-uri" in after  # no page: the command again
    finally:
        ui.stop()
