"""The training panel's form: one widget per config field, to and from a config.

Every change is validated as the core validates a config
(:func:`nbexec.config.load_config`), plus the check the launch makes of the
number of processes against the devices, so a bad value shows while typing:
the rejected field is marked (``INVALID_CLASS``) and the error is shown
under the form. Fields the form does not show come from the base config,
and ``section.key=value`` lines in the overrides box win over the fields.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from nbexec.checks import device_problem
from nbexec.config import BUILTIN_TRAINER_MODULE, load_config
from nbexec.errors import ConfigError
from nbexec.hardware import HardwareInfo
from nbexec.notebook.theme import ERROR_COLOUR, MUTED_COLOUR
from nbexec.render import markup
from nbexec.trainer_spec import TrainerSpec, trainer_spec

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig

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
    "backup": "backup.enabled",
    "backup_target": "backup.target",
}


class ConfigForm:
    """The form of a :class:`~nbexec.notebook.panel.TrainingPanel`.

    Attributes:
        fields: the widgets by name (see ``FIELD_PATHS``, plus ``overrides``).
        nproc_hint: what ``auto`` means here and the bound on nproc.
        error: why the form is rejected (empty when it is valid).
        widget: the form's box (fields, hint, error).
        base: the config the fields were filled from (the rest of the config).
    """

    def __init__(self, base: Mapping[str, Any], hardware: HardwareInfo,
                 on_validated: Callable[[], None] = lambda: None,
                 on_edited: Callable[[], None] = lambda: None) -> None:
        """Build the widgets and fill them from ``base`` (validated by :meth:`validate`, not here).

        Args:
            base: a raw config dict (sections as in a config file).
            hardware: what nproc is bounded by.
            on_validated: called after every validation (the panel enables Train).
            on_edited: called when a person changes a field (not when a config is loaded).
        """
        self.base: dict[str, Any] = copy.deepcopy(dict(base))
        self.hardware = hardware
        self.valid = False
        self.error_field: str | None = None  # the form field the last error marks
        self._on_validated = on_validated
        self._on_edited = on_edited
        self._filling = False  # loading a config into the form: validate once at the end

        # the built-in trainer's fields and choices, through its spec (the core imports no trainer)
        self.spec: TrainerSpec = _builtin_spec()
        backbones = list(self.spec.choices.get("model.backbone", ()))
        backbone = (self.base.get("model") or {}).get("backbone", self.spec.defaults["model"]["backbone"])
        options = backbones + ([backbone] if backbone not in backbones else [])
        self.fields: dict[str, widgets.ValueWidget] = {
            "backbone": widgets.Dropdown(options=options, value=backbone, description="backbone"),
            "learning_rate": widgets.FloatText(description="learning rate"),
            "batch_size": widgets.IntText(description="batch size"),
            "epochs": widgets.IntText(description="epochs"),
            "nproc": widgets.Text(description="nproc", placeholder="auto or a number"),
            "experiment": widgets.Text(description="experiment"),
            "run_name": widgets.Text(description="run name", placeholder="generated"),
            "backup": widgets.Checkbox(description="back up the checkpoint to", indent=True,
                                       layout=widgets.Layout(width="auto")),
            "backup_target": widgets.Text(placeholder="drive, or a folder", layout=widgets.Layout(width="auto")),
            "overrides": widgets.Textarea(description="overrides", placeholder="section.key=value, one per line"),
        }
        self._labels = {name: w.description for name, w in self.fields.items()}
        for w in self.fields.values():
            w.style.description_width = "110px"
        # the target sits right after its checkbox's words, as one sentence: "[x] back up the checkpoint to [...]"
        self.fields["backup"].add_class("nbexec-backup")
        self.fields["backup_target"].add_class("nbexec-backup-target")
        self.fields["backup_target"].style.description_width = "initial"  # room for a "⚠" only
        self.nproc_hint = widgets.HTML(value=self._nproc_hint())
        self.error = widgets.HTML(value="")
        self.fill(self.base)
        f = self.fields
        self.widget = widgets.VBox([
            f["backbone"], f["learning_rate"], f["batch_size"], f["epochs"],
            widgets.HBox([f["nproc"], self.nproc_hint]), f["experiment"], f["run_name"],
            widgets.HBox([f["backup"], f["backup_target"]], layout=widgets.Layout(align_items="center")),
            f["overrides"], self.error,
        ])
        for w in self.fields.values():
            w.observe(self._on_change, names="value")

    def config(self) -> TrainingConfig:
        """The config the form describes, validated as the core validates it.

        Raises:
            ConfigError: naming the field and what is allowed.
        """
        raw = copy.deepcopy(self.base)
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
        raw["backup"] = {**(raw.get("backup") or {}), "enabled": bool(f["backup"]),
                         "target": f["backup_target"].strip() or None}
        return load_config(raw, overrides=self.override_lines())

    def load_config(self, source: str | Path | Mapping[str, Any]) -> None:
        """Put a config (file, string or dict) into the form, replacing what is there.

        Raises:
            ConfigError: the config is invalid (the form is left as it was).
        """
        raw = load_config(source).to_dict()
        self.fill(raw)
        self.validate()

    def fill(self, raw: Mapping[str, Any]) -> None:
        """Put a raw (already validated) config into the fields; it becomes the base."""
        model, training = raw.get("model") or {}, raw.get("training") or {}
        launch, tracking = raw.get("launch") or {}, raw.get("tracking") or {}
        output, backup = raw.get("output") or {}, raw.get("backup") or {}
        model_defaults: Mapping[str, Any] = self.spec.defaults["model"]
        training_defaults: Mapping[str, Any] = self.spec.defaults["training"]
        values = {
            "backbone": model.get("backbone", model_defaults["backbone"]),
            "learning_rate": _number(training.get("learning_rate", training_defaults["learning_rate"])),
            "batch_size": int(training.get("batch_size", training_defaults["batch_size"])),
            "epochs": int(training.get("epochs", training_defaults["epochs"])),
            "nproc": str(launch.get("nproc", "auto")),
            "experiment": str(tracking.get("experiment") or "nbexec"),
            "run_name": str(output.get("run_name") or ""),
            "backup": bool(backup.get("enabled", False)),
            "backup_target": str(backup.get("target") or ""),
            "overrides": "",
        }
        backbone = self.fields["backbone"]
        if values["backbone"] not in backbone.options:
            backbone.options = [*backbone.options, values["backbone"]]
        self._filling = True
        try:
            self.base = copy.deepcopy(dict(raw))
            for name, value in values.items():
                self.fields[name].value = value
        finally:
            self._filling = False

    def override_lines(self) -> list[str]:
        """The overrides box as ``key=value`` lines (blank lines and ``#`` comments dropped)."""
        text: str = self.fields["overrides"].value
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def validate(self) -> ConfigError | None:
        """Check the form now: mark the rejected field, show why, enable Train only when valid.

        Besides the config's own checks, the number of processes must fit the
        devices (as the launch checks it), so a bad nproc shows while typing.
        """
        try:
            error: ConfigError | None = self._device_error(self.config())
        except ConfigError as err:
            error = err
        bad = None
        if error is not None:
            overridden = {line.partition("=")[0].strip() for line in self.override_lines()}
            bad = _form_field(error.field)
            if bad is None or error.field in overridden:
                bad = "overrides"  # an override (which wins over the form's field) is what is wrong
        for name, w in self.fields.items():
            if name == bad:
                w.add_class(INVALID_CLASS)
                w.description = f"⚠ {self._labels[name]}" if self._labels[name] else "⚠"
            else:
                w.remove_class(INVALID_CLASS)
                w.description = self._labels[name]
        self.error.value = (
            "" if error is None else f'<div style="color:{ERROR_COLOUR}">{markup.esc(error_text(error))}</div>'
        )
        self.error_field = bad
        self.valid = error is None
        self._on_validated()
        return error

    def _device_error(self, cfg: TrainingConfig) -> ConfigError | None:
        from nbexec.plan import resolve_backend, resolve_nproc

        hw = self.hardware
        problem = device_problem(resolve_nproc(cfg, hw), resolve_backend(cfg, hw), hw,
                                 oversubscribe=cfg.launch.oversubscribe)
        return None if problem is None else ConfigError(problem, field="launch.nproc", value=cfg.launch.nproc)

    def _nproc_hint(self) -> str:
        hw = self.hardware
        if hw.gpu_count:
            bound = f"at most {hw.gpu_count} (GPUs visible)"
            auto = hw.gpu_count
        else:
            bound = f"at most {hw.cpu_count} (CPU cores, gloo)"
            auto = max(1, min(2, hw.cpu_count))
        return f'<span style="color:{MUTED_COLOUR}">auto = {auto} · {markup.esc(bound)}</span>'

    def field_label(self, name: str) -> str:
        """What a person sees as a field's name (``learning rate``, ``backup to``)."""
        return {"backup_target": "backup to"}.get(name) or self._labels.get(name) or name

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if not self._filling:
            self.validate()
            self._on_edited()


def error_text(error: ConfigError) -> str:
    """The message, naming the field once: ``training.learning_rate = 5.0 is not allowed; ...``."""
    text = str(error)
    if error.field and error.field not in text:
        return f"{error.field}: {text}"
    return text


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


def _builtin_spec() -> TrainerSpec:
    spec = trainer_spec(BUILTIN_TRAINER_MODULE)
    if spec is None:  # TRAINERS names it: only a broken install gets here
        raise RuntimeError(f"the built-in trainer's spec ({BUILTIN_TRAINER_MODULE}) cannot be found")
    return spec
