"""TrainingPanel as widget models, driven from Python: fill the form, click, wait, read the widgets.

Real torchrun (gloo) jobs and the session's real MLflow store; no browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from nbexec.hardware import GPUInfo, HardwareInfo
from nbexec.notebook.panel import ALL_RANKS, TrainingPanel
from nbexec.notebook.panel_form import INVALID_CLASS
from nbexec.result import RunStatus

FIXTURE_SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "scripts"


def tiny_config(tmp_path: Path) -> dict[str, Any]:
    """The reference trainer at its smallest (a 2-rank job takes a few seconds on 2 CPU cores)."""
    return {
        "model": {"d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
        "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
        "data": {"path": str(tmp_path / "data"), "num_train": 320, "num_val": 64, "seq_len": 16},
        "launch": {"nproc": 2},
        "output": {"dir": str(tmp_path / "out")},
    }


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait until ``condition()`` is truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_invalid_learning_rate_disables_train_and_fixing_it_enables_it(tmp_path: Path) -> None:
    panel = TrainingPanel.from_config(tiny_config(tmp_path))
    lr = panel.fields["learning_rate"]
    assert not panel.train_button.disabled
    assert panel.error.value == ""

    lr.value = -1.0

    assert panel.train_button.disabled
    assert "training.learning_rate = -1.0 is not allowed; use a number &gt; 0.0 and &lt;= 1.0" in panel.error.value
    assert INVALID_CLASS in lr._dom_classes
    assert lr.description.startswith("⚠")
    assert all(INVALID_CLASS not in w._dom_classes for name, w in panel.fields.items() if name != "learning_rate")
    assert panel.train() is None and panel.run is None  # Train does nothing while the form is invalid

    lr.value = 3e-3

    assert not panel.train_button.disabled
    assert panel.error.value == ""
    assert INVALID_CLASS not in lr._dom_classes
    assert lr.description == "learning rate"
    assert panel.config().training["learning_rate"] == 3e-3


def test_a_rejected_value_is_named_once_and_the_status_is_not_ready(tmp_path: Path) -> None:
    panel = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
    assert panel.status.value == "ready"

    panel.fields["learning_rate"].value = 5.0

    shown = html.unescape(re.sub("<[^>]+>", "", panel.error.value))
    assert shown.startswith("training.learning_rate = 5.0 is not allowed")
    assert shown.count("training.learning_rate") == 1  # not "training.learning_rate: training.learning_rate = ..."
    assert panel.status.value == "not ready: fix learning rate (see below the form)"
    panel.fields["learning_rate"].value = 0.01
    assert panel.status.value == "ready" and panel.error.value == ""


def test_where_the_widget_cannot_be_drawn_the_panel_shows_a_still_picture(tmp_path: Path) -> None:
    """A saved notebook opened before it runs (or untrusted) falls back to text/html, then text/plain."""
    panel = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
    panel.fields["experiment"].value = "still-picture"

    bundle = panel._repr_mimebundle_()

    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    assert "VBox(" not in bundle["text/plain"] and "VBox(" not in bundle["text/html"]
    assert bundle["text/plain"].startswith("nbexec TrainingPanel (ready; backbone=tiny-encoder, learning rate=0.01")
    assert "run the cell" in bundle["text/plain"]
    assert "still-picture" in bundle["text/html"] and "run the cell" in bundle["text/html"]


def test_form_builds_the_config_through_load_config(tmp_path: Path) -> None:
    panel = TrainingPanel.from_config(tiny_config(tmp_path))
    panel.fields["batch_size"].value = 8
    panel.fields["epochs"].value = 3
    panel.fields["nproc"].value = "auto"
    panel.fields["experiment"].value = "panel-exp"
    panel.fields["run_name"].value = "my-run"
    panel.fields["overrides"].value = "# a comment\ntraining.max_steps=7\n\nmodel.dropout=0.0\n"

    cfg = panel.config()

    assert cfg.training["batch_size"] == 8 and cfg.training["epochs"] == 3
    assert cfg.training["max_steps"] == 7 and cfg.model["dropout"] == 0.0
    assert cfg.model["backbone"] == "tiny-encoder"
    assert cfg.launch.nproc == "auto"
    assert cfg.tracking.experiment == "panel-exp"
    assert cfg.output.run_name == "my-run"

    panel.fields["overrides"].value = "training.epochs=0"  # the overrides area is marked for its own errors
    assert panel.train_button.disabled
    assert "training.epochs = 0" in panel.error.value
    assert INVALID_CLASS in panel.fields["overrides"]._dom_classes

    panel.fields["overrides"].value = ""
    panel.fields["nproc"].value = "many"
    assert panel.train_button.disabled
    assert "launch.nproc" in panel.error.value
    assert INVALID_CLASS in panel.fields["nproc"]._dom_classes


def test_train_runs_the_job_and_shows_the_summary_in_the_panel(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    panel = TrainingPanel.from_config(tiny_config(tmp_path))
    panel.fields["epochs"].value = 1
    panel.fields["experiment"].value = "panel-tests"
    panel.fields["run_name"].value = "panel-ok"

    panel.train_button.click()

    run = panel.run
    assert run is not None
    assert panel.train_button.disabled and not panel.stop_button.disabled  # torchrun alone takes seconds to start
    assert panel.status.value == "panel-ok: RUNNING"
    assert run.wait(timeout=180) is RunStatus.FINISHED
    result = run.result()

    saved = json.loads((run.run_dir / "result.json").read_text())
    assert run.run_dir == tmp_path / "out" / "panel-ok" and saved["status"] == "FINISHED"
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    tracked = client.get_run(result.mlflow_run_id)
    assert tracked.info.status == "FINISHED"
    assert tracked.info.run_name == "panel-ok"
    assert client.get_experiment(tracked.info.experiment_id).name == "panel-tests"

    assert panel.status.value == "panel-ok: FINISHED"
    assert not panel.train_button.disabled and panel.stop_button.disabled
    shown = panel.output.value
    assert result.metrics and all(name in shown for name in result.metrics)
    assert result.mlflow_run_id in shown and "lineage" in shown and "FINISHED" in shown
    out, err = capfd.readouterr()  # the job's output went to the panel, none printed
    assert "rank" not in out and "rank" not in err

    # The loss curve of what the trainer reported is drawn once the run is over.
    # an inline SVG in the theme's colours (a PNG would stay white in a dark notebook)
    assert panel.curve.value.startswith("<svg") and "var(--jp-" in panel.curve.value
    assert panel.curve.layout.display is None
    assert {"loss", "train_loss", "val_loss"} <= set(panel.curve_metrics)
    # The rank selector offers every rank of the job.
    assert [v for _, v in panel.rank_picker.options] == ["0", "1", ALL_RANKS]
    assert "last lines of rank 0" in panel.output.value and "[rank0]" in panel.output.value
    # The history, read back from MLflow, was refreshed when the run ended.
    newest = panel.history_rows[0]
    assert (newest.run_id, newest.name, newest.status) == (result.mlflow_run_id, "panel-ok", "FINISHED")
    assert "panel-ok" in panel.history.value and "val_f1=" in panel.history.value


def test_picking_a_past_run_loads_its_config_into_the_form(tmp_path: Path) -> None:
    first = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
    first.fields["learning_rate"].value = 7e-3
    first.fields["batch_size"].value = 8
    first.fields["experiment"].value = "panel-history"
    first.fields["run_name"].value = "remembered"
    first.fields["overrides"].value = "training.max_steps=3"
    run = first.train()
    assert run is not None and run.wait(timeout=180) is RunStatus.FINISHED

    # A fresh panel (e.g. the next day) with other values; the history comes from MLflow.
    panel = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
    panel.fields["experiment"].value = "panel-history"
    panel.fields["learning_rate"].value = 1e-4
    panel.refresh_history()
    row = next(r for r in panel.history_rows if r.name == "remembered")
    assert row.params["training.learning_rate"] == "0.007" and row.status == "FINISHED"

    panel.history_picker.value = row.run_id

    assert panel.fields["learning_rate"].value == 7e-3
    assert panel.fields["batch_size"].value == 8
    assert panel.fields["run_name"].value == ""  # the next run gets a name of its own
    assert panel.config().training["max_steps"] == 3  # from the run's config, not only the form's fields
    assert panel.status.value == "loaded the config of remembered"
    assert not panel.train_button.disabled
    assert panel.history_picker.value == row.run_id  # the picker says whose config the form holds

    # Another config loaded: the picker no longer names that run, and picking it again loads it again.
    panel.load_config(tiny_config(tmp_path))
    assert panel.history_picker.value == "" and panel.fields["learning_rate"].value == 1e-2
    assert panel.status.value == "ready"
    panel.history_picker.value = row.run_id
    assert panel.fields["learning_rate"].value == 7e-3 and panel.history_picker.value == row.run_id
    # A field edited by hand: the form is no longer that run's config either.
    panel.fields["epochs"].value = 4
    assert panel.history_picker.value == ""


def test_nproc_is_bounded_by_the_devices_while_typing(tmp_path: Path) -> None:
    cpu_only = HardwareInfo(gpus=(), cpu_count=2, platform="local", gpu_source="none", gpu_error=None,
                            cuda_visible_devices=None)
    panel = TrainingPanel.from_config(tiny_config(tmp_path), hardware=cpu_only, history=False)
    assert "auto = 2" in panel.nproc_hint.value and "at most 2" in panel.nproc_hint.value

    panel.fields["nproc"].value = "3"

    assert panel.train_button.disabled
    assert "nproc 3 is more than the 2 CPU core(s) available" in panel.error.value
    assert INVALID_CLASS in panel.fields["nproc"]._dom_classes
    panel.fields["overrides"].value = "launch.oversubscribe=true"  # the documented way past the bound
    assert not panel.train_button.disabled

    gpus = tuple(GPUInfo(index=i, name="H100", memory_mb=81_559, uuid=f"GPU-{i}") for i in range(2))
    two_gpus = HardwareInfo(gpus=gpus, cpu_count=16, platform="local", gpu_source="nvml", gpu_error=None,
                            cuda_visible_devices=None)
    panel = TrainingPanel.from_config({**tiny_config(tmp_path), "launch": {"nproc": "auto"}}, hardware=two_gpus,
                                      history=False)
    assert not panel.train_button.disabled and "auto = 2" in panel.nproc_hint.value
    panel.fields["nproc"].value = "4"
    assert panel.train_button.disabled and "more than the 2 visible GPU(s)" in panel.error.value


def test_backup_fields_set_the_backup_section(tmp_path: Path) -> None:
    panel = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
    assert panel.config().backup.enabled is False
    panel.fields["backup"].value = True
    panel.fields["backup_target"].value = str(tmp_path / "safe")
    cfg = panel.config()
    assert cfg.backup.enabled is True and cfg.backup.target == str(tmp_path / "safe")
    assert not panel.train_button.disabled


def test_two_panels_run_their_own_jobs_at_the_same_time(tmp_path: Path) -> None:
    panels = []
    for name in ("left", "right"):
        panel = TrainingPanel.from_config(tiny_config(tmp_path), history=False)
        panel.fields["run_name"].value = name
        panel.fields["experiment"].value = "panel-pair"
        panels.append(panel)

    runs = [p.train() for p in panels]

    assert all(r is not None for r in runs)
    assert all(p.running for p in panels)  # both under way at once
    assert [r.wait(timeout=240) for r in runs] == [RunStatus.FINISHED, RunStatus.FINISHED]  # type: ignore[union-attr]
    for panel, name, other in ((panels[0], "left", "right"), (panels[1], "right", "left")):
        assert panel.status.value == f"{name}: FINISHED"
        assert name in panel.output.value and f"out/{other}" not in panel.output.value
        assert (tmp_path / "out" / name / "result.json").is_file()
    assert runs[0].result().mlflow_run_id != runs[1].result().mlflow_run_id  # type: ignore[union-attr]


def test_stop_kills_every_process_and_the_run_ends_killed(tmp_path: Path) -> None:
    panel = TrainingPanel.from_config(tiny_config(tmp_path), entrypoint=FIXTURE_SCRIPTS / "hang.py", history=False)
    panel.fields["experiment"].value = f"first-run-{uuid.uuid4().hex[:8]}"  # an experiment with no run yet
    panel.refresh_history()
    assert "no runs in this experiment yet" in panel.history.value
    assert panel.stop_button.disabled and panel.stop_button.button_style == ""  # nothing to stop: not red
    panel.train_button.click()
    run = panel.run
    assert run is not None and run.pid is not None
    assert panel.train_button.disabled and not panel.stop_button.disabled
    assert panel.stop_button.button_style == "danger"
    # its first run is under way: the history says so, not "no runs in this experiment yet"
    assert "no runs in this experiment yet" not in panel.history.value
    assert f"{run.name} is running" in panel.history.value

    # every rank has started its grandchild: the whole tree is there to collect
    poll(lambda: all(any("ready rank" in ln.text for ln in run.lines(r)) for r in (0, 1)), 60, "both ranks ready")
    poll(lambda: "ready rank 0" in panel.output.value, 120, "the live view to show rank 0's line in the panel")
    assert "ready rank 1" not in panel.output.value
    panel.rank_picker.value = "1"  # rank 1's lines, printed before it was chosen, show at once
    poll(lambda: "ready rank 1" in panel.output.value, 120, "the view to switch to rank 1")
    assert "ready rank 0" not in panel.output.value
    panel.rank_picker.value = ALL_RANKS
    poll(lambda: "ready rank 0" in panel.output.value and "ready rank 1" in panel.output.value, 120, "all ranks")
    launcher = psutil.Process(run.pid)
    job = [launcher, *launcher.children(recursive=True)]
    assert len(job) >= 5  # torchrun, 2 ranks, 2 grandchildren

    panel.stop_button.click()

    assert run.wait(timeout=60) is RunStatus.KILLED
    _, alive = psutil.wait_procs(job, timeout=120)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    poll(lambda: panel.status.value.endswith("KILLED"), 120, "status KILLED")
    assert not panel.train_button.disabled and panel.stop_button.disabled
    assert panel.stop_button.button_style == ""
    assert panel.history_rows and panel.history_rows[0].name == run.name  # listed once it ended
    assert "is running" not in panel.history.value
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == "KILLED"
