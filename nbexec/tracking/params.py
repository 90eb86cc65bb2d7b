"""The run's params: the trainer config, flattened, secrets redacted, within MLflow's limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbexec.config import TRAINER_SECTIONS
from nbexec.redact import split_secrets
from nbexec.tracking.batching import MAX_PARAM_VALUE, mlflow_key, truncate

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.plan import LaunchPlan


def training_params(config: TrainingConfig, plan: LaunchPlan | None = None) -> dict[str, str]:
    """What ran, as MLflow params: the trainer's sections and the launch that matters.

    ``model.*``, ``training.*`` and ``data.*`` as resolved (the built-in trainer's
    defaults included); ``launch.nproc`` and ``launch.backend`` resolved (never
    ``auto`` when a plan is given); for a script of the user's own, what nbexec
    knows of it: ``launch.entrypoint`` or ``launch.module`` and ``launch.args``.
    Values under secret names, and secret-looking script arguments, are
    ``***REDACTED***``; each value is cut to MLflow's 6,000 characters.
    """
    from nbexec.config import BUILTIN_TRAINER_MODULE
    from nbexec.redact import redact_argv

    clean, _ = split_secrets(config.to_dict())
    params = flatten_params({name: clean[name] for name in TRAINER_SECTIONS if clean[name]})
    if plan is not None:
        nproc: object = plan.nproc
        backend: object = plan.backend
    else:
        from nbexec.plan import resolve_nproc

        nproc, backend = resolve_nproc(config), config.launch.backend
    params["launch.nproc"] = str(nproc)
    params["launch.backend"] = str(backend)
    launch = config.launch
    if launch.target_module != BUILTIN_TRAINER_MODULE:
        if launch.entrypoint:
            params["launch.entrypoint"] = truncate(str(launch.entrypoint), MAX_PARAM_VALUE)
        elif launch.module:
            params["launch.module"] = launch.module
    if launch.args:
        params["launch.args"] = truncate(json.dumps(redact_argv(list(launch.args))), MAX_PARAM_VALUE)
    return params


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as ``{"a.b.c": "value"}``, secrets redacted, values truncated.

    Lists become JSON; other values ``str()`` as ``mlflow.log_param`` would.
    """
    clean, _ = split_secrets(data)
    out: dict[str, str] = {}
    _flatten(clean, prefix, out)
    return out


def _flatten(data: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, f"{path}.", out)
            continue
        if isinstance(value, (list, tuple, Mapping)):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        out[mlflow_key(path)] = truncate(text, MAX_PARAM_VALUE)
