"""The trainer's config sections: defaults, validation and resolution.

No torch here: the core config loader calls :func:`validate` before anything
is spawned, and importing nbexec must stay light.

Known fields:

    model:    backbone "tiny-encoder" (the built-in model, nothing downloaded) or a
              Hugging Face model id or local directory (``nbexec[hf]``); for
              tiny-encoder: d_model, layers, heads, ff_dim ints >= 1 (d_model
              divisible by heads), dropout float in [0, 1); for a Hugging Face
              backbone: max_length int >= 8 (sub-tokens a sentence is cut to),
              subtoken_labels "first" (the first sub-token of a word carries its
              label, the rest are ignored) or "all" (every sub-token carries it,
              B-X becomes I-X after the first)
    training: learning_rate float in (0, 1]; batch_size (per process, per
              micro-batch), epochs, log_every ints >= 1; seed int; max_steps int
              >= 1 or null (a hard stop across epochs); weight_decay float >= 0
              (not on biases and norms); grad_clip float > 0 or null;
              grad_accumulation_steps int >= 1; lr_scheduler "linear" (warmup, then
              decay to 0 at the last step) or "constant" (warmup, then flat);
              warmup_ratio float in [0, 1) of the steps, or warmup_steps int >= 0
              (wins when set); mixed_precision "auto" (bf16 on a GPU that has it,
              else fp16 with a loss scaler; none on CPU), "no", "bf16", "fp16";
              best_metric, one of val_f1, val_precision, val_recall,
              val_token_accuracy, val_loss (which epoch ``checkpoint/best`` keeps)
    data:     path str or null: a directory with CoNLL-2003 text, JSONL, or a
              ``datasets`` dataset saved with ``save_to_disk`` (see :mod:`.corpus`);
              a missing or empty one gets the synthetic dataset; null (default)
              is ``outputs/data/synthetic-ner-<its settings>``, relative to the
              working directory of the job, so configs with other settings never
              share one; format "auto" (detected), "conll", "jsonl", "hf_disk",
              "synthetic"; labels a list of tags or null (taken from the data);
              num_train, num_val ints >= 1, seq_len int >= 4 (words; also where
              tiny-encoder cuts a sentence), seed int: the synthetic dataset's
              (its own seed, so changing training.seed does not change the data)

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

__all__ = ["BACKBONES", "DEFAULTS", "TINY_ENCODER", "is_hf_backbone", "resolved", "synthetic_data_path", "validate"]

TINY_ENCODER = "tiny-encoder"
# What a form offers; model.backbone takes any Hugging Face model id or local directory.
BACKBONES = (TINY_ENCODER, "distilbert-base-uncased", "bert-base-cased", "roberta-base")
DATA_FORMATS = ("auto", "conll", "jsonl", "hf_disk", "synthetic")
EVAL_METRICS = ("val_f1", "val_precision", "val_recall", "val_token_accuracy", "val_loss")
SYNTHETIC_ROOT = "outputs/data"

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "backbone": "tiny-encoder",
        "d_model": 64,
        "layers": 2,
        "heads": 4,
        "ff_dim": 128,
        "dropout": 0.1,
        "max_length": 128,
        "subtoken_labels": "first",
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
        "grad_accumulation_steps": 1,
        "lr_scheduler": "linear",
        "warmup_ratio": 0.0,
        "warmup_steps": None,
        "mixed_precision": "auto",
        "best_metric": "val_f1",
    },
    "data": {
        "path": None,
        "format": "auto",
        "labels": None,
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


def _path(path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(path, value, "use a directory path (a non-empty string), or null for the synthetic dataset")
    return value


def _backbone(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(path, value, f"use {TINY_ENCODER!r}, a Hugging Face model id (distilbert-base-uncased) "
                                 "or a local model directory")
    return value.strip()


def _labels(path: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    allowed = 'use a list of tags (e.g. ["O", "B-PER", "I-PER"]) or null to take them from the data'
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise _fail(path, value, allowed)
    if not all(isinstance(v, str) and v.strip() for v in value) or len(set(value)) != len(value):
        raise _fail(path, value, allowed + " (non-empty strings, each once)")
    return [str(v) for v in value]


_CHECKS: dict[str, dict[str, Check]] = {
    "model": {
        "backbone": _backbone,
        "d_model": _int(1),
        "layers": _int(1),
        "heads": _int(1),
        "ff_dim": _int(1),
        "dropout": _float(0.0, 1.0, low_open=False, high_open=True),
        "max_length": _int(8),
        "subtoken_labels": _choice(("first", "all")),
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
        "grad_accumulation_steps": _int(1),
        "lr_scheduler": _choice(("linear", "constant")),
        "warmup_ratio": _float(0.0, 1.0, low_open=False, high_open=True),
        "warmup_steps": _int(0, optional=True),
        "mixed_precision": _choice(("auto", "no", "bf16", "fp16")),
        "best_metric": _choice(EVAL_METRICS),
    },
    "data": {
        "path": _path,
        "format": _choice(DATA_FORMATS),
        "labels": _labels,
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
                 "steps": "max_steps", "gradient_accumulation_steps": "grad_accumulation_steps",
                 "max_grad_norm": "grad_clip", "lr_scheduler_type": "lr_scheduler", "fp16": "mixed_precision",
                 "bf16": "mixed_precision", "metric_for_best_model": "best_metric"},
    "model": {"hidden_size": "d_model", "num_layers": "layers", "num_heads": "heads", "n_heads": "heads",
              "dropout_rate": "dropout", "model_name_or_path": "backbone", "max_seq_length": "max_length",
              "label_all_tokens": "subtoken_labels"},
    "data": {"label_list": "labels", "train_file": "path", "dataset_path": "path"},
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
    *,
    place_synthetic_data: bool = True,
) -> dict[str, dict[str, Any]]:
    """The three sections with defaults filled and known values normalised.

    Args:
        place_synthetic_data: fill a missing ``data.path`` with the synthetic
            dataset's folder for these settings (what the ranks do). The job's
            config keeps it ``null`` (nbexec's core asks with False): a run's
            config.yaml, edited and run again or on another machine (AzureML),
            then makes the dataset its new settings ask for instead of pointing
            at one made with the old ones. The ranks report the folder they used.

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
    if out["data"]["path"] is None and place_synthetic_data:
        out["data"]["path"] = synthetic_data_path(out["data"])
    m = out["model"]
    if m["backbone"] == TINY_ENCODER and m["d_model"] % m["heads"]:
        raise _fail(
            "model.d_model",
            m["d_model"],
            f"d_model must be divisible by model.heads = {m['heads']} "
            f"(e.g. {m['heads'] * max(1, round(m['d_model'] / m['heads']))})",
        )
    return out


def is_hf_backbone(backbone: str) -> bool:
    """True for a Hugging Face model id or directory, False for the built-in ``tiny-encoder``."""
    return backbone != TINY_ENCODER


def synthetic_data_path(data: Mapping[str, Any]) -> str:
    """Where the synthetic dataset of these settings goes when ``data.path`` is not given.

    Keyed by every generator setting, so two configs that differ in data size
    each get their own dataset instead of colliding on one path.
    """
    from nbexec.trainers.token_classification.data import GENERATOR_VERSION  # no torch there

    return (f"{SYNTHETIC_ROOT}/synthetic-ner-train{data['num_train']}-val{data['num_val']}"
            f"-len{data['seq_len']}-seed{data['seed']}-v{GENERATOR_VERSION}")


def _plain(value: Any) -> Any:
    # The core hands sections over frozen (MappingProxyType, tuples), which
    # neither deepcopy nor YAML/JSON dumping accept.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
