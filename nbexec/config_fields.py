"""Field checks for nbexec's own config sections.

Each check takes the dotted path and the value, and returns the normalised
value or raises :class:`ConfigError` naming the field, the value and what is
allowed. :data:`CHECKS` maps section -> key -> check.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nbexec.errors import ConfigError

BACKENDS = ("auto", "gloo", "nccl")
MAX_NPROC = 1024
# Names that become directory names and MLflow names: no separators, no shell
# or glob characters, nothing that starts with a dot or a dash.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def did_you_mean(name: str, allowed: Iterable[str], *, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path} = {value!r} is not allowed; {allowed}", field=path, value=value)


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, value, "use true or false")
    return value


def _int(path: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, value, f"use an integer >= {low}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(path, value, f"use an integer {bounds}")
    return value


def _seconds(path: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(path, value, f"use a number of seconds between {low:g} and {high:g}")
    return float(value)


def _nproc(path: str, value: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, value, f'use "auto" or an integer between 1 and {MAX_NPROC}')
    return _int(path, value, low=1, high=MAX_NPROC)


def _choice(options: tuple[str, ...]):  # noqa: ANN202 - small check factory
    def check(path: str, value: Any) -> str:
        if value not in options:
            hint = did_you_mean(str(value), options)
            raise _fail(path, value, f"allowed: {', '.join(options)}{hint}")
        return str(value)

    return check


def _name(path: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # "--set tracking.experiment=2024" reads as a number
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise _fail(
            path,
            value,
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it becomes a directory name)",
        )
    return value


def _experiment(path: str, value: Any) -> str:
    checked = _name(path, value)
    if checked is None:
        raise _fail(path, value, "give an experiment name such as ner")
    return checked


def _opt_str(path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(path, value, "use a non-empty string or null")
    return value


def _path_str(path: str, value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(path, value, "use a directory path")
    return value


def _module(path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _MODULE_RE.match(value):
        raise _fail(path, value, "use a dotted module name such as mypkg.train")
    return value


def _args(path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise _fail(
            path, value, "use a list of arguments, one item each (no shell string): [--lr, '3e-5']"
        )
    if not isinstance(value, (list, tuple)):
        raise _fail(path, value, "use a list of strings")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _fail(f"{path}[{i}]", item, "each argument must be a string or number")
        out.append(str(item))
    return tuple(out)


def _env(path: str, value: Any) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise _fail(path, value, "use a mapping of NAME: value")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise _fail(f"{path}.{key}", key, "environment variable names are [A-Za-z_][A-Za-z0-9_]*")
        if isinstance(item, (dict, list)) or item is None:
            raise _fail(f"{path}.{key}", item, "use a string or number")
        out[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return MappingProxyType(out)


def _scale_out_checks() -> dict[str, Any]:
    from nbexec.schedulers.checks import LAUNCH_CHECKS

    return LAUNCH_CHECKS


CHECKS: dict[str, dict[str, Any]] = {
    "launch": {
        "nproc": _nproc,
        "backend": _choice(BACKENDS),
        "entrypoint": _opt_str,
        "module": _module,
        "args": _args,
        "max_restarts": lambda p, v: _int(p, v, low=0, high=100),
        "omp_num_threads": lambda p, v: None if v is None else _int(p, v, low=1, high=1024),
        "oversubscribe": _bool,
        "env": _env,
        **_scale_out_checks(),
    },
    "output": {"dir": _path_str, "run_name": _name},
    "tracking": {
        "enabled": _bool,
        "uri": _opt_str,
        "experiment": _experiment,
        "metrics_from": _choice(("parent", "rank0")),
        "required": _bool,
        "timeout": lambda p, v: _seconds(p, v, low=1, high=3600),
    },
    "backup": {"enabled": _bool, "target": _opt_str},
}


