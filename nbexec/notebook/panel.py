"""``TrainingPanel``: a training form with Train and Stop buttons, the live view and the summary.

    from nbexec.notebook.panel import TrainingPanel
    panel = TrainingPanel.from_config("config.yaml")
    panel                       # shows the form; Train launches in the background

The panel adds no run path of its own: the form becomes a config through
:func:`nbexec.config.load_config` (the core's validation, checked on every
change), Train goes through :func:`nbexec.executor.launch`, and the run is
shown by the same :class:`~nbexec.notebook.live.LiveRunView` sink as the
magics, publishing into the panel's own HTML widget so nothing the job does
lands in another cell.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbexec.config import load_config
from nbexec.errors import ConfigError
from nbexec.notebook import markup
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink
from nbexec.trainers.token_classification.schema import BACKBONES, DEFAULTS

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.notebook.live import LiveRunView
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun

INVALID_CLASS = "nbexec-invalid"  # added to a field's widget while its value is rejected

# form field -> the config field a ConfigError names for it
FIELD_PATHS: Mapping[str, str] = {
    "backbone": "model.backbone",
    "learning_rate": "training.learning_rate",
    "batch_size": "training.batch_size",
    "epochs": "training.epochs",
    "nproc": "launch.nproc",
    "experiment": "tracking.experiment",
    "run_name": "output.run_name",
}


class _PanelEnd(Sink):
    """Tells the panel its job is over (after the view has published the summary)."""

    wants_lines = False

    def __init__(self, panel: TrainingPanel, over: threading.Event) -> None:
        self._panel = panel
        self._over = over

    def on_end(self, result: TrainingResult) -> None:
        self._over.set()
        self._panel._job_ended(result)


class TrainingPanel:
    """A form for one training config: edit, Train, watch, Stop.

    Attributes:
        widget: the whole panel (a VBox); the panel itself displays as it.
        run: the last launched job's handle (None before the first Train).
        view: the last job's live view sink.
        train_button, stop_button, status, error, output: the parts, for tests and layouts.
    """

    def __init__(self, base: Mapping[str, Any]) -> None:
        """Build the form from a raw config dict (use :meth:`from_config`)."""
        self._base = copy.deepcopy(dict(base))
        self._job_over = threading.Event()
        self.run: TrainingRun | None = None
        self.view: LiveRunView | None = None
        self._lock = threading.Lock()
        self._valid = False

        model = self._base.get("model") or {}
        training = self._base.get("training") or {}
        launch = self._base.get("launch") or {}
        tracking = self._base.get("tracking") or {}
        output = self._base.get("output") or {}
        backbone = model.get("backbone", DEFAULTS["model"]["backbone"])
        options = list(BACKBONES) + ([backbone] if backbone not in BACKBONES else [])

        self.fields: dict[str, widgets.ValueWidget] = {
            "backbone": widgets.Dropdown(options=options, value=backbone, description="backbone"),
            "learning_rate": widgets.FloatText(
                value=_number(training.get("learning_rate", DEFAULTS["training"]["learning_rate"])),
                description="learning rate",
            ),
            "batch_size": widgets.IntText(
                value=training.get("batch_size", DEFAULTS["training"]["batch_size"]), description="batch size"
            ),
            "epochs": widgets.IntText(value=training.get("epochs", DEFAULTS["training"]["epochs"]),
                                      description="epochs"),
            "nproc": widgets.Text(value=str(launch.get("nproc", "auto")), description="nproc",
                                  placeholder="auto or a number"),
            "experiment": widgets.Text(value=str(tracking.get("experiment", "nbexec")), description="experiment"),
            "run_name": widgets.Text(value=str(output.get("run_name") or ""), description="run name",
                                     placeholder="generated"),
            "overrides": widgets.Textarea(value="", description="overrides",
                                          placeholder="section.key=value, one per line"),
        }
        self._labels = {name: w.description for name, w in self.fields.items()}
        for w in self.fields.values():
            w.style.description_width = "110px"
        self.train_button = widgets.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = widgets.Label(value="ready")
        self.error = widgets.HTML(value="")
        self.output = widgets.HTML(value="")
        form = widgets.VBox(list(self.fields.values()) + [self.error])
        buttons = widgets.HBox([self.train_button, self.stop_button, self.status])
        self.widget = widgets.VBox([form, buttons, self.output])

        for w in self.fields.values():
            w.observe(self._on_change, names="value")
        self.train_button.on_click(lambda _button: self.train())
        self.stop_button.on_click(lambda _button: self.stop())
        self.validate()

    @classmethod
    def from_config(
        cls, source: str | Path | Mapping[str, Any], *, entrypoint: str | Path | None = None
    ) -> TrainingPanel:
        """A panel for a config file (``.yaml``/``.json``) or a config dict.

        Args:
            source: the config the form starts from (validated first).
            entrypoint: a training script to run instead of the config's
                (the same as ``launch.entrypoint`` in the config).

        Raises:
            ConfigError: the config itself is invalid.
        """
        raw = load_config(source).to_dict()
        if entrypoint is not None:
            raw["launch"]["entrypoint"], raw["launch"]["module"] = str(entrypoint), None
            load_config(raw)
        return cls(raw)

    # --- the form -> a config ---------------------------------------------------------

    def config(self) -> TrainingConfig:
        """The config the form describes, validated as the core validates it.

        Raises:
            ConfigError: naming the field and what is allowed.
        """
        raw = copy.deepcopy(self._base)
        f = {name: w.value for name, w in self.fields.items()}
        raw.setdefault("model", {})["backbone"] = f["backbone"]
        training = raw.setdefault("training", {})
        training["learning_rate"] = f["learning_rate"]
        training["batch_size"] = f["batch_size"]
        training["epochs"] = f["epochs"]
        nproc = f["nproc"].strip()
        raw.setdefault("launch", {})["nproc"] = int(nproc) if nproc.isdigit() else nproc
        raw.setdefault("tracking", {})["experiment"] = f["experiment"].strip()
        raw.setdefault("output", {})["run_name"] = f["run_name"].strip() or None
        return load_config(raw, overrides=self._override_lines())

    def _override_lines(self) -> list[str]:
        text: str = self.fields["overrides"].value
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def validate(self) -> ConfigError | None:
        """Check the form now: mark the rejected field, show why, enable Train only when valid."""
        try:
            self.config()
        except ConfigError as err:
            error: ConfigError | None = err
        else:
            error = None
        bad = None
        if error is not None:
            overridden = {line.partition("=")[0].strip() for line in self._override_lines()}
            bad = _form_field(error.field)
            if bad is None or error.field in overridden:
                bad = "overrides"  # an override (which wins over the form's field) is what is wrong
        for name, w in self.fields.items():
            if name == bad:
                w.add_class(INVALID_CLASS)
                w.description = f"⚠ {self._labels[name]}"
            else:
                w.remove_class(INVALID_CLASS)
                w.description = self._labels[name]
        self.error.value = (
            "" if error is None
            else f'<div style="color:{markup.STDERR_COLOUR}">{markup.esc(error.field or "config")}: '
                 f"{markup.esc(error)}</div>"
        )
        self._valid = error is None
        self._sync_buttons()
        return error

    def _on_change(self, change: Mapping[str, Any]) -> None:
        self.validate()

    # --- running ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A job of this panel is under way (its end not yet shown)."""
        return self.run is not None and not self._job_over.is_set()

    def train(self) -> TrainingRun | None:
        """Launch the form's config in the background; None when it cannot start (shown in the panel)."""
        import nbexec
        from nbexec.executor import launch, prepare
        from nbexec.notebook.live import LiveRunView
        from nbexec.notebook.summary import code_version
        from nbexec.tracking.tags import git_tags

        with self._lock:
            if self.running or not self._valid:
                return None
            self.train_button.disabled = True  # no second click while this one starts
            try:
                plan = prepare(self.config())
            except Exception as err:  # noqa: BLE001 - shown in the panel, not raised into the kernel
                self._show_not_started(err)
                return None
            view = LiveRunView(
                plan, code_version=code_version(git_tags(), nbexec.__version__), publish=self._publish
            )
            self.view = view
            view.show()
            over = threading.Event()
            try:
                run = launch(plan=plan, sinks=[view, _PanelEnd(self, over)])
            except Exception as err:  # noqa: BLE001
                view.fail_to_start(err)
                self._show_not_started(err)
                return None
            view.attach(run)
            self.run, self._job_over = run, over
            self.status.value = f"{run.name}: {RunStatus.RUNNING.value}"
            self._sync_buttons()
            return run

    def stop(self, *, block: bool = False, grace: float = 10.0) -> None:
        """Cancel the running job (every process stopped; the run ends KILLED).

        Args:
            block: wait until it is stopped (the button does not: the kernel stays free).
            grace: seconds between SIGTERM and SIGKILL.
        """
        run = self.run
        if run is None or run.done():
            return
        self.stop_button.disabled = True
        self.status.value = f"{run.name}: stopping"
        worker = threading.Thread(target=run.cancel, args=(grace,), name=f"nbexec-stop-{run.name}", daemon=True)
        worker.start()
        if block:
            worker.join()

    # --- called from the runner's threads ----------------------------------------------

    def _publish(self, bundle: Mapping[str, str]) -> None:
        self.output.value = bundle["text/html"]

    def _job_ended(self, result: TrainingResult) -> None:
        with self._lock:  # after train() has recorded the run, however fast the job was
            self.status.value = f"{result.run_name}: {result.status.value}"
            self._sync_buttons()

    def _show_not_started(self, err: BaseException) -> None:
        self.status.value = "not started"
        self.error.value = f'<div style="color:{markup.STDERR_COLOUR}">{markup.esc(err)}</div>'
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        running = self.running
        self.train_button.disabled = running or not self._valid
        self.stop_button.disabled = not running

    # --- display -----------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = repr(self.run) if self.run is not None else "no run yet"
        return f"<TrainingPanel {state}>"


def _form_field(path: str | None) -> str | None:
    for name, field_path in FIELD_PATHS.items():
        if path == field_path:
            return name
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
