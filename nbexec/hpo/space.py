"""The search space of a sweep: which config values a trial changes, and how.

A space maps dotted config keys to a distribution::

    training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
    training.batch_size:    {type: categorical, choices: [8, 16, 32]}
    model.d_model:          {type: int, low: 16, high: 64, step: 16}
    model.dropout:          [0.0, 0.1]          # a list is short for categorical

Parsing is pure (no Optuna import): a bad space is a :class:`ConfigError`
naming the key and what is allowed, before any study or job exists.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.config import ALL_SECTIONS, TrainingConfig, load_config
from nbexec.errors import ConfigError

KINDS = ("float", "int", "categorical")
# What a trial may change: the trainer's sections and how it is launched.
TUNABLE_SECTIONS = ("model", "training", "data", "launch")


@dataclass(frozen=True)
class Dimension:
    """One searched config value.

    Attributes:
        name: the dotted config key (``training.learning_rate``).
        kind: ``float``, ``int`` or ``categorical``.
        low, high, step, log: the range (float and int).
        choices: the values (categorical).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The canonical form (what the study key hashes)."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this value (an earlier answer comes back unchanged)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.low, self.high
        assert low is not None and high is not None  # parse() sets them for numbers
        if self.kind == "float":
            return trial.suggest_float(self.name, low, high, step=self.step, log=self.log)
        return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; build it with :meth:`parse`."""

    dimensions: tuple[Dimension, ...]

    @classmethod
    def parse(cls, source: SearchSpace | Mapping[str, Any] | str | Path) -> SearchSpace:
        """Read a space from a dict, a YAML/JSON file or YAML text.

        Raises:
            ConfigError: naming the key (``search_space.<key>``), the bad value and what is allowed.
        """
        if isinstance(source, SearchSpace):
            return source
        raw = _read(source)
        if not raw:
            raise ConfigError(
                "the search space is empty; give at least one key, e.g. "
                "{training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}}",
                field="search_space",
                value=source,
            )
        dims = [_dimension(str(name), spec) for name, spec in raw.items()]
        return cls(tuple(sorted(dims, key=lambda d: d.name)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{key: spec}`` in canonical form, keys sorted."""
        return {d.name: d.to_dict() for d in self.dimensions}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's value for every key (``{dotted key: value}``)."""
        return {d.name: d.suggest(trial) for d in self.dimensions}

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions by key (imports Optuna)."""
        import optuna

        out: dict[str, Any] = {}
        for d in self.dimensions:
            if d.kind == "categorical":
                out[d.name] = optuna.distributions.CategoricalDistribution(list(d.choices))
                continue
            assert d.low is not None and d.high is not None  # parse() sets them for numbers
            if d.kind == "float":
                out[d.name] = optuna.distributions.FloatDistribution(d.low, d.high, step=d.step, log=d.log)
            elif d.kind == "int":
                out[d.name] = optuna.distributions.IntDistribution(
                    int(d.low), int(d.high), step=int(d.step or 1), log=d.log
                )
            else:
                out[d.name] = optuna.distributions.CategoricalDistribution(list(d.choices))
        return out


def apply_params(config: TrainingConfig, params: Mapping[str, Any], **sections: Mapping[str, Any]) -> TrainingConfig:
    """``config`` with each dotted ``params`` key set to its value, re-validated.

    Values are set on the data, never re-parsed from text. ``sections`` sets
    more values the same way (``output={"dir": ...}``).

    Raises:
        ConfigError: the combination is not a valid config (e.g. d_model not divisible by heads).
    """
    raw = copy.deepcopy(config.to_dict())
    for key, value in params.items():
        _set(raw, key, value)
    for section, values in sections.items():
        for key, value in values.items():
            _set(raw, f"{section}.{key}", value)
    return load_config(raw)


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"search space key {dotted!r}: {part} is not a section", field=dotted, value=child)
        node = child
    node[parts[-1]] = value


def _read(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, Path)):
        from nbexec.config import _looks_like_path, _parse_text

        text = str(source)
        if isinstance(source, Path) or _looks_like_path(text):
            path = Path(text)
            if not path.is_file():
                raise ConfigError(
                    f"search space file {text!r} does not exist; give a YAML/JSON file or a dict",
                    field="search_space", value=text,
                )
            return _parse_text(path.read_text(encoding="utf-8"), origin=str(path))
        return _parse_text(text, origin="search space text")
    raise ConfigError(
        f"the search space must be a dict, a YAML/JSON file or YAML text, not {type(source).__name__}",
        field="search_space", value=source,
    )


def _dimension(name: str, spec: Any) -> Dimension:
    field = f"search_space.{name}"
    section = name.split(".", 1)[0]
    if "." not in name or not all(name.split(".")):
        raise ConfigError(
            f"search space key {name!r} must be a dotted config key such as training.learning_rate",
            field=field, value=spec,
        )
    if section not in TUNABLE_SECTIONS:
        where = "is not a config section" if section not in ALL_SECTIONS else "cannot change between trials"
        raise ConfigError(
            f"search space key {name!r}: {section!r} {where}; tunable sections: {', '.join(TUNABLE_SECTIONS)}",
            field=field, value=spec,
        )
    if isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{field} = {spec!r} is not allowed; use {{type: float|int|categorical, ...}} or a list of choices",
            field=field, value=spec,
        )
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{field}.type = {kind!r} is not allowed; allowed: {', '.join(KINDS)}",
                          field=f"{field}.type", value=kind)
    allowed = {"float": {"type", "low", "high", "step", "log"}, "int": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}[kind]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{field}: unknown key {unknown[0]!r} for type {kind}; allowed: {', '.join(sorted(allowed))}",
                          field=f"{field}.{unknown[0]}", value=spec[unknown[0]])
    if kind == "categorical":
        return _categorical(name, field, spec.get("choices"))
    return _range(name, field, kind, spec)


def _categorical(name: str, field: str, choices: Any) -> Dimension:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ConfigError(f"{field}.choices = {choices!r} is not allowed; give a non-empty list",
                          field=f"{field}.choices", value=choices)
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(f"{field}.choices: {choice!r} is not allowed; choices are numbers, strings, "
                              "booleans or null", field=f"{field}.choices", value=choice)
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{field}.choices = {list(choices)!r} repeats a value; list each once",
                          field=f"{field}.choices", value=choices)
    return Dimension(name, "categorical", choices=tuple(choices))


def _range(name: str, field: str, kind: str, spec: Mapping[str, Any]) -> Dimension:
    def number(key: str, required: bool = True) -> float | None:
        value = spec.get(key)
        if value is None and not required:
            return None
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as text
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and kind == "int" and float(value) != int(value):  # type: ignore[arg-type]  # a number: ok says so
            ok = False
        if not ok:
            what = "an integer" if kind == "int" else "a finite number"
            raise ConfigError(f"{field}.{key} = {spec.get(key)!r} is not allowed; use {what}",
                              field=f"{field}.{key}", value=spec.get(key))
        assert isinstance(value, (int, float))
        return int(value) if kind == "int" else float(value)

    low, high, step = number("low"), number("high"), number("step", required=False)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{field}.log = {log!r} is not allowed; use true or false", field=f"{field}.log", value=log)
    assert low is not None and high is not None
    if not low < high:
        raise ConfigError(f"{field}: low ({low}) must be below high ({high})", field=f"{field}.low", value=low)
    if log and low <= 0:
        raise ConfigError(f"{field}: a log range needs low > 0, not {low}", field=f"{field}.low", value=low)
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{field}.step = {step} is not allowed; use a step > 0, without log: true",
                          field=f"{field}.step", value=step)
    return Dimension(name, kind, low=low, high=high, step=step, log=log)
