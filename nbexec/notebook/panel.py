"""``TrainingPanel``: a training form with Train and Stop buttons, the live view and the summary.

    from nbexec.notebook.panel import TrainingPanel
    panel = TrainingPanel.from_config("config.yaml")
    panel                       # shows the form; Train launches in the background

The panel adds no run path of its own: the form becomes a config through
:func:`nbexec.config.load_config` (the core's validation, checked on every
change), Train goes through :func:`nbexec.executor.launch`, and the run is
shown by the same :class:`~nbexec.notebook.live.LiveRunView` sink as the
magics, publishing into the panel's own HTML widget so nothing the job does
lands in another cell. Below the run: a rank selector for the log tail, the
loss curve once the run is over, and the experiment's recent runs read back
from MLflow (picking one loads its config into the form).

Threads: widget callbacks run on the kernel's main thread; the runner's
dispatcher thread calls ``_job_ended`` (status, curve, history refresh) before
the run's ``wait()`` returns, so code that waited sees the final panel.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbexec.config import load_config
from nbexec.errors import ConfigError
from nbexec.hardware import HardwareInfo, detect_hardware
from nbexec.notebook.history_box import RunHistoryBox
from nbexec.notebook.live_runs import track
from nbexec.notebook.live_widget import LiveViewWidget
from nbexec.notebook.panel_form import ConfigForm
from nbexec.notebook.stacks_button import StacksButton
from nbexec.notebook.theme import ERROR_COLOUR, FRAME_COLOUR, MUTED_COLOUR, PANEL_CSS
from nbexec.render import markup
from nbexec.result import RunStatus
from nbexec.runner.sinks import Sink

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.notebook.live import LiveRunView
    from nbexec.result import TrainingResult
    from nbexec.runner.handle import TrainingRun

ALL_RANKS = "all"  # the rank selector's value for every rank and the launcher
READY = "ready"
STATIC_HINT = (
    "This is a still picture of an interactive panel: run the cell (with a kernel) to use it, "
    "or trust the notebook to see the saved panel."
)


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
    """A form for one training config: edit, Train, watch, Stop, look back.

    Attributes:
        widget: the whole panel (a VBox); the panel itself displays as it.
        run: the last launched job's handle (None before the first Train).
        view: the last job's live view sink.
        form: the form (:class:`~nbexec.notebook.panel_form.ConfigForm`); ``fields``, ``error`` and
            ``nproc_hint`` are its widgets.
        stacks: the Stacks button and where its stacks show (:class:`~nbexec.notebook.stacks_button.StacksButton`).
        train_button, stop_button, status, output, rank_picker, curve,
        history, history_picker: the run history's table and picker (``recent``: the whole box).
    """

    def __init__(
        self,
        base: Mapping[str, Any],
        *,
        hardware: HardwareInfo | None = None,
        history: bool = True,
    ) -> None:
        """Build the form from a raw config dict (use :meth:`from_config`).

        Args:
            base: the config the form starts from (sections as in a config file).
            hardware: what nproc is bounded by (default: detected, without touching CUDA).
            history: read the experiment's recent runs from MLflow now (in the background).
        """
        self.hardware = hardware or detect_hardware()
        self._job_over = threading.Event()
        self.run: TrainingRun | None = None
        self.view: LiveRunView | None = None
        self._lock = threading.Lock()
        self.curve_metrics: list[str] = []  # what the loss curve shows
        self._curve_note = ""  # why there is no curve, when drawing it failed

        self._idle_status = READY  # what the status says while no job runs and the form is valid
        self.status = widgets.Label(value=READY)
        self.recent = RunHistoryBox(on_pick=self.load_run)
        self.form = ConfigForm(base, self.hardware, on_validated=self._sync_buttons,
                               on_edited=lambda: self.recent.show_loaded(None))
        self.fields, self.nproc_hint, self.error = self.form.fields, self.form.nproc_hint, self.form.error
        self.train_button = widgets.Button(description="Train", button_style="primary", icon="play")
        # Stop is red only while there is a job to stop: a disabled red button still looks clickable
        self.stop_button = widgets.Button(description="Stop", button_style="", icon="stop", disabled=True)
        self.stacks = StacksButton()  # where every rank is, on demand (and on a stall)
        self.rank_picker = widgets.Dropdown(options=[("rank 0", "0")], value="0", description="show lines of")
        self.output = LiveViewWidget()  # the live view draws here: its log tail follows the newest line
        self.curve = widgets.HTML(value="", layout=widgets.Layout(display="none", max_width="640px"))
        self.history, self.history_picker = self.recent.table, self.recent.picker
        self.rank_picker.style.description_width = "110px"
        buttons = widgets.HBox([self.train_button, self.stop_button, self.stacks.button, self.status])
        self.widget = widgets.VBox([
            widgets.HTML(value=PANEL_CSS, layout=widgets.Layout(display="none")), self.form.widget, buttons,
            self.rank_picker, self.output, self.stacks.output, self.curve, self.recent.widget,
        ])
        # CSS hooks for styling and for browser tests
        self.widget.add_class("nbexec-panel")
        self.status.add_class("nbexec-panel-status")
        self.train_button.add_class("nbexec-train")
        self.stop_button.add_class("nbexec-stop")

        self.train_button.on_click(lambda _button: self.train())
        self.stop_button.on_click(lambda _button: self.stop())
        self.rank_picker.observe(self._on_rank_picked, names="value")
        self.recent.refresh_button.on_click(lambda _button: self.refresh_history())
        self.validate()
        if history:
            threading.Thread(target=self.refresh_history, name="nbexec-panel-history", daemon=True).start()

    @classmethod
    def from_config(
        cls,
        source: str | Path | Mapping[str, Any],
        *,
        entrypoint: str | Path | None = None,
        **options: Any,
    ) -> TrainingPanel:
        """A panel for a config file (``.yaml``/``.json``) or a config dict.

        Args:
            source: the config the form starts from (validated first).
            entrypoint: a training script to run instead of the config's
                (the same as ``launch.entrypoint`` in the config).
            options: passed to the constructor (``hardware``, ``history``).

        Raises:
            ConfigError: the config itself is invalid.
        """
        raw = load_config(source).to_dict()
        if entrypoint is not None:
            raw["launch"]["entrypoint"], raw["launch"]["module"] = str(entrypoint), None
            load_config(raw)
        return cls(raw, **options)

    # --- the form (nbexec.notebook.panel_form) ----------------------------------------

    def config(self) -> TrainingConfig:
        """The config the form describes, validated as the core validates it.

        Raises:
            ConfigError: naming the field and what is allowed.
        """
        return self.form.config()

    def load_config(self, source: str | Path | Mapping[str, Any]) -> None:
        """Put a config (file, string or dict) into the form, replacing what is there.

        Raises:
            ConfigError: the config is invalid (the form is left as it was).
        """
        self.form.load_config(source)
        self.recent.show_loaded(None)  # the form no longer holds a past run's config
        self._set_idle_status(READY)

    def validate(self) -> ConfigError | None:
        """Check the form now: mark the rejected field, show why, enable Train only when valid."""
        return self.form.validate()

    # --- running ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A job of this panel is under way (its end not yet shown)."""
        return self.run is not None and not self._job_over.is_set()

    def train(self) -> TrainingRun | None:
        """Launch the form's config in the background; None when it cannot start (shown in the panel)."""
        from nbexec.executor import launch, prepare
        from nbexec.notebook.live import LiveRunView
        from nbexec.tracking.tags import git_tags

        with self._lock:
            if self.running or not self.form.valid:
                return None
            self.train_button.disabled = True  # no second click while this one starts
            try:
                plan = prepare(self.config())
            except Exception as err:  # noqa: BLE001 - shown in the panel, not raised into the kernel
                self._show_not_started(err)
                return None
            self._reset_rank_picker(plan.nproc)
            view = LiveRunView(
                plan,
                ranks=_ranks(self.rank_picker.value),
                git=git_tags(),
                widget=self.output,
                on_follow_failure=self._show_failed_rank,
            )
            self.view = view
            self.curve.layout.display = "none"
            view.show()
            self.stacks.reset()
            over = threading.Event()
            try:
                run = launch(plan=plan, sinks=[view, self.stacks, _PanelEnd(self, over)])
            except Exception as err:  # noqa: BLE001
                view.fail_to_start(err)
                self._show_not_started(err)
                return None
            view.attach(run)
            track(run)  # cancelled, its outcome written, if the kernel shuts down while it runs
            self.run, self._job_over = run, over
            self.status.value = f"{run.name}: {RunStatus.RUNNING.value}"
            self.recent.show_running(run.name)
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

    def _reset_rank_picker(self, nproc: int) -> None:
        keep = self.rank_picker.value
        options = [(f"rank {r}", str(r)) for r in range(nproc)] + [("all ranks", ALL_RANKS)]
        self.rank_picker.options = options
        self.rank_picker.value = keep if keep in {v for _, v in options} else "0"

    def _show_failed_rank(self, ranks: tuple[int, ...]) -> None:
        """The view switched to the rank that failed: the picker says so too."""
        value = str(ranks[0])
        if value in {v for _, v in self.rank_picker.options}:
            self.rank_picker.value = value

    def _on_rank_picked(self, change: Mapping[str, Any]) -> None:
        if self.view is not None:
            self.view.select_ranks(_ranks(change["new"]))

    # --- run history (MLflow) ------------------------------------------------------------

    @property
    def history_rows(self) -> list[Any]:
        """The runs in the history table (newest first)."""
        return self.recent.rows

    def refresh_history(self) -> None:
        """Read this experiment's recent runs from MLflow into the table and the picker."""
        try:
            cfg = self.config()
        except ConfigError:
            cfg = load_config(self.form.base)
        uri = self._tracking_uri(cfg) if cfg.tracking.enabled else None
        self.recent.refresh(uri, cfg.tracking.experiment)

    def load_run(self, run_id: str) -> None:
        """Load the config a past run (by MLflow run id) was launched with into the form."""
        from nbexec.notebook.history import run_config

        cfg = load_config(self.form.base)
        try:
            raw = run_config(self._tracking_uri(cfg), run_id)
            self.form.load_config(raw)
        except Exception as err:  # noqa: BLE001 - shown in the panel
            self.recent.show_loaded(None)
            self._set_idle_status(f"could not load run {run_id[:12]}")
            self.error.value = f'<div style="color:{ERROR_COLOUR}">{markup.esc(err)}</div>'
            return
        self.recent.show_loaded(run_id)  # the picker says whose config the form holds
        self._set_idle_status(f"loaded the config of {self.recent.name_of(run_id)}")

    @staticmethod
    def _tracking_uri(cfg: TrainingConfig) -> str:
        from nbexec.tracking.store import normalize_tracking_uri, resolve_tracking_uri

        return normalize_tracking_uri(resolve_tracking_uri(config=cfg))

    # --- called from the runner's threads ----------------------------------------------

    def _job_ended(self, result: TrainingResult) -> None:
        # The curve and the history first: once the status says the run is over, the whole panel is.
        with self._lock:  # after train() has recorded the run, however fast the job was
            run = self.run
        self._draw_curve(run, result)
        self.recent.show_running(None)
        if load_config(self.form.base).tracking.enabled:
            self.refresh_history()
        with self._lock:
            self._idle_status = f"{result.run_name}: {result.status.value}" + self._curve_note
            self.status.value = self._idle_status
            self._sync_buttons()

    def _draw_curve(self, run: TrainingRun | None, result: TrainingResult) -> None:
        from nbexec.notebook.curves import loss_curve_svg, loss_names, metric_series

        try:
            series = metric_series(run.events if run is not None else [])
            self.curve_metrics = loss_names(series)
            svg = loss_curve_svg(series, title=f"{result.run_name} ({result.status.value})")
        except Exception as err:  # noqa: BLE001 - a plotting problem must not hide the result
            self._curve_note = f" (no loss curve: {err})"
            return
        self._curve_note = ""
        if svg is not None:  # an SVG in the theme's colours (a PNG would be white in a dark notebook)
            self.curve.value = svg
            self.curve.layout.display = None

    def _show_not_started(self, err: BaseException) -> None:
        self._idle_status = "not started"
        self.error.value = f'<div style="color:{ERROR_COLOUR}">{markup.esc(err)}</div>'
        self._sync_buttons()

    def _set_idle_status(self, text: str) -> None:
        self._idle_status = text
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        """Buttons and status from the state: running, or idle with a valid or an invalid form."""
        running = self.running
        self.train_button.disabled = running or not self.form.valid
        self.stop_button.disabled = not running
        self.stop_button.button_style = "danger" if running else ""
        if running:
            return  # the status says the job's state
        if self.form.valid:
            self.status.value = self._idle_status
        else:
            bad = self.form.error_field
            what = f"fix {self.form.field_label(bad)}" if bad else "fix the form"
            self.status.value = f"not ready: {what} (see below the form)"

    # --- display -----------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget, plus what a front end without the widget's state shows instead.

        A saved notebook opened before its cells run (or not trusted) cannot draw the
        widget; JupyterLab then falls back to ``text/html``, other viewers (GitHub, nbviewer)
        too. That is a still picture of the form and a hint, not ``VBox(children=...``.
        """
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = self._snapshot_text()
            data["text/html"] = self._snapshot_html()
        return bundle

    def _snapshot_values(self) -> list[tuple[str, str]]:
        f = {name: w.value for name, w in self.fields.items()}
        backup = f"yes, to {f['backup_target'] or '(no target)'}" if f["backup"] else "no"
        return [
            ("backbone", str(f["backbone"])), ("learning rate", str(f["learning_rate"])),
            ("batch size", str(f["batch_size"])), ("epochs", str(f["epochs"])), ("nproc", str(f["nproc"])),
            ("experiment", str(f["experiment"])), ("run name", str(f["run_name"] or "generated")),
            ("backup", backup),
        ]

    def _snapshot_text(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in self._snapshot_values())
        return f"nbexec TrainingPanel ({self.status.value}; {values}). {STATIC_HINT}"

    def _snapshot_html(self) -> str:
        rows = [(markup.esc(k), markup.esc(v)) for k, v in self._snapshot_values()]
        return (
            f'<div class="nbexec-panel-snapshot" style="border-left:4px solid {FRAME_COLOUR};padding:4px 10px">'
            f"<div><b>nbexec TrainingPanel</b> · {markup.esc(self.status.value)}</div>"
            f"{markup.table(rows)}"
            f'<div style="color:{MUTED_COLOUR}">{markup.esc(STATIC_HINT)}</div></div>'
        )

    def __repr__(self) -> str:
        state = repr(self.run) if self.run is not None else "no run yet"
        return f"<TrainingPanel {state}>"


def _ranks(value: str) -> tuple[int, ...] | None:
    return None if value == ALL_RANKS else (int(value),)
