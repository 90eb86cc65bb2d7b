"""The trainer's config sections: defaults, validation and resolution.

No torch here: the core config loader calls :func:`validate` before anything
is spawned, and importing nbexec must stay light.

Known fields:

    model:    backbone "tiny-encoder"; d_model, layers, heads, ff_dim ints >= 1
              (d_model divisible by heads); dropout float in [0, 1)
    training: learning_rate float in (0, 1]; batch_size (per process), epochs,
              log_every ints >= 1; seed int; max_steps int >= 1 or null (a hard
              stop across epochs); weight_decay float >= 0; grad_clip float > 0
              or null
    data:     path str (default ``outputs/data/synthetic-ner``, relative to the
              working directory of the job); num_train, num_val ints >= 1;
              seq_len int >= 4; seed int (the dataset's own seed, so changing
              training.seed does not change the data)

A key the trainer does not read is passed through untouched (a secret for your
tooling, a note), except one that looks like a misspelt known key
(``training.epoch``, ``training.learing_rate``, ``training.lr``): the trainer
would silently ignore it, so it is refused with a did-you-mean. A user's own
script (``launch.entrypoint``/``launch.module``) is not checked against these
fields at all.

Float fields also accept numeric strings such as ``"3e-5"``, because YAML 1.1
(and so ``training.learning_rate=3e-5`` overrides) reads that as text;
:func:`resolved` turns them into floats.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from nbexec.config_fields import did_you_mean
from nbexec.errors import ConfigError

__all__ = ["BACKBONES", "DEFAULTS", "resolved", "validate"]

BACKBONES = ("tiny-encoder",)

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "backbone": "tiny-encoder",
        "d_model": 64,
        "layers": 2,
        "heads": 4,
        "ff_dim": 128,
        "dropout": 0.1,
    },
    "training": {
        "learning_rate": 2.0e-3,
        "batch_size": 16,
        "epochs": 2,
        "seed": 42,
        "log_every": 50,
        "max_steps": None,
        "weight_decay": 0.01,
        "grad_clip": 1.0,
    },
    "data": {
        "path": "outputs/data/synthetic-ner",
        "num_train": 8000,
        "num_val": 500,
        "seq_len": 32,
        "seed": 0,
    },
}

Check = Callable[[str, Any], Any]  # (dotted field, value) -> normalised value


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path} = {value!r} is not allowed; {allowed}", field=path, value=value)


def _int(low: int | None = None, *, optional: bool = False) -> Check:
    def check(path: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        bound = f" >= {low}" if low is not None else ""
        allowed = f"use an integer{bound}" + (" or null" if optional else "")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, value, allowed)
        if low is not None and value < low:
            raise _fail(path, value, allowed)
        return value

    return check


def _float(
    low: float, high: float | None = None, *, low_open: bool, high_open: bool = False,
    optional: bool = False,
) -> Check:
    lo = f"> {low}" if low_open else f">= {low}"
    hi = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
    allowed = f"use a number {lo}{hi}" + (" or null" if optional else "")

    def check(path: str, value: Any) -> float | None:
        if value is None and optional:
            return None
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _fail(path, value, allowed) from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise _fail(path, value, allowed)
        number = float(number)
        if not math.isfinite(number) or number < low or (low_open and number == low):
            raise _fail(path, value, allowed)
        if high is not None and (number > high or (high_open and number == high)):
            raise _fail(path, value, allowed)
        return number

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in options:
            raise _fail(path, value, f"allowed: {', '.join(repr(o) for o in options)}")
        return str(value)

    return check


def _path(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(path, value, "use a directory path (a non-empty string)")
    return value


_CHECKS: dict[str, dict[str, Check]] = {
    "model": {
        "backbone": _choice(BACKBONES),
        "d_model": _int(1),
        "layers": _int(1),
        "heads": _int(1),
        "ff_dim": _int(1),
        "dropout": _float(0.0, 1.0, low_open=False, high_open=True),
    },
    "training": {
        "learning_rate": _float(0.0, 1.0, low_open=True),
        "batch_size": _int(1),
        "epochs": _int(1),
        "seed": _int(),
        "log_every": _int(1),
        "max_steps": _int(1, optional=True),
        "weight_decay": _float(0.0, low_open=False),
        "grad_clip": _float(0.0, low_open=True, optional=True),
    },
    "data": {
        "path": _path,
        "num_train": _int(1),
        "num_val": _int(1),
        "seq_len": _int(4),
        "seed": _int(),
    },
}


# Names other trainers use for the built-in trainer's fields (difflib sees no likeness).
ALIASES: dict[str, dict[str, str]] = {
    "training": {"lr": "learning_rate", "num_train_epochs": "epochs", "num_epochs": "epochs",
                 "per_device_train_batch_size": "batch_size", "bs": "batch_size", "batch": "batch_size",
                 "steps": "max_steps"},
    "model": {"hidden_size": "d_model", "num_layers": "layers", "num_heads": "heads", "n_heads": "heads",
              "dropout_rate": "dropout"},
    "data": {},
}


def _misspelt(section: str, key: object) -> ConfigError | None:
    """The error for a key that looks like a known field of ``section`` misspelt, else None."""
    name = str(key)
    known = list(_CHECKS[section])
    # Stricter than nbexec's own sections (0.6): here other keys are allowed, so only a near miss is refused.
    hint = did_you_mean(name, known, cutoff=0.75)
    if not hint and name in ALIASES[section]:
        hint = f" (did you mean {ALIASES[section][name]!r}?)"
    if not hint:
        return None
    return ConfigError(
        f"unknown key {section}.{name}{hint}; allowed in {section}: {', '.join(known)} "
        "(the built-in trainer would silently ignore it; other keys are free only for your own script, "
        "--entrypoint)",
        field=f"{section}.{name}",
        value=name,
    )


def validate(model: Mapping[str, Any], training: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """Check the known fields of the trainer's sections.

    Args:
        model, training, data: the sections as given (defaults need not be filled).

    Raises:
        ConfigError: naming the field (``field="training.learning_rate"``), the
            bad value and what is allowed; or a misspelt key, with a did-you-mean.
    """
    resolved(model, training, data)


def resolved(
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The three sections with defaults filled and known values normalised.

    Returns:
        ``{"model": {...}, "training": {...}, "data": {...}}``, fresh plain dicts;
        unknown keys are kept as given.

    Raises:
        ConfigError: as :func:`validate`.
    """
    given = {"model": model or {}, "training": training or {}, "data": data or {}}
    out: dict[str, dict[str, Any]] = {}
    for name, section in given.items():
        if not isinstance(section, Mapping):
            raise _fail(name, section, f"{name} must be a mapping (e.g. {name}: {{key: value}})")
        merged = copy.deepcopy(DEFAULTS[name])
        for key, value in section.items():
            check = _CHECKS[name].get(key)
            if check is None and (error := _misspelt(name, key)) is not None:
                raise error
            merged[key] = check(f"{name}.{key}", value) if check else _plain(value)
        out[name] = merged
    m = out["model"]
    if m["d_model"] % m["heads"]:
        raise _fail(
            "model.d_model",
            m["d_model"],
            f"d_model must be divisible by model.heads = {m['heads']} "
            f"(e.g. {m['heads'] * max(1, round(m['d_model'] / m['heads']))})",
        )
    return out


def _plain(value: Any) -> Any:
    # The core hands sections over frozen (MappingProxyType, tuples), which
    # neither deepcopy nor YAML/JSON dumping accept.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
