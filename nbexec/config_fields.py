"""Field checks for config values: nbexec's own sections and the schedulers' options.

Each check takes the dotted path of the field (``launch.nproc``) and the value,
and returns the normalised value or raises :class:`ConfigError` naming the
field, the value and what is allowed (:func:`fail` builds that error).
:mod:`nbexec.config` maps its sections' keys to these checks; a scheduler's
options (``nbexec.schedulers.slurm.options``...) use them for ``launch.<name>``.

Standard library only, and nothing from nbexec but its errors: both the config
and the schedulers import this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from nbexec.errors import ConfigError

MAX_NPROC = 1024
MAX_NODES = 4096
# Names that become directory names and MLflow names: no separators, no shell
# or glob characters, nothing that starts with a dot or a dash.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NNODES_RE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")

Check = Callable[[str, Any], Any]
"""A field check: ``check(path, value)`` returns the normalised value or raises ConfigError."""
E = TypeVar("E", bound=Enum)


def did_you_mean(name: str, allowed: Iterable[str], *, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def fail(path: str, value: Any, allowed: str) -> ConfigError:
    """The error for a refused value: ``<path> = <value> is not allowed; <allowed>``.

    Returned, not raised, so the caller's ``raise`` shows where the check failed.
    """
    return ConfigError(f"{path} = {value!r} is not allowed; {allowed}", field=path, value=value)


def check_bool(path: str, value: Any) -> bool:
    """``true`` or ``false`` (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise fail(path, value, "use true or false")
    return value


def check_int(path: str, value: Any, *, low: int, high: int | None = None) -> int:
    """An integer (not a bool) between ``low`` and ``high`` (inclusive; no top when None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, value, f"use an integer >= {low}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise fail(path, value, f"use an integer {bounds}")
    return value


def int_or_none(low: int, high: int | None = None) -> Check:
    """A check for null or an integer between ``low`` and ``high`` (see :func:`check_int`)."""
    return lambda path, value: None if value is None else check_int(path, value, low=low, high=high)


def check_seconds(path: str, value: Any, *, low: float, high: float) -> float:
    """A number of seconds between ``low`` and ``high``, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise fail(path, value, f"use a number of seconds between {low:g} and {high:g}")
    return float(value)


MAX_WATCH_S = 7 * 24 * 3600.0  # a week: longer is a typo (minutes for seconds), not a setting


def check_stall_timeout(path: str, value: Any) -> float:
    """``launch.stall_timeout``: seconds without progress before a job counts as stalled; 0 turns it off."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WATCH_S:
        raise fail(path, value, f"use a number of seconds between 0 and {MAX_WATCH_S:g} (e.g. 300 for 5 min; "
                                "0 turns stall detection off)")
    return float(value)


def check_collective_timeout(path: str, value: Any) -> float | None:
    """``launch.collective_timeout``: seconds a collective may wait for its peers, or null for torch's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_WATCH_S:
        raise fail(path, value, f"use a number of seconds between 1 and {MAX_WATCH_S:g} (e.g. 600), or null "
                                "for torch's default (30 min on gloo, 10 min on NCCL)")
    return float(value)


def check_nproc(path: str, value: Any) -> int | str:
    """``"auto"`` or a number of processes per node, 1 to :data:`MAX_NPROC` (``"4"`` reads as 4)."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, value, f'use "auto" or an integer between 1 and {MAX_NPROC}')
    return check_int(path, value, low=1, high=MAX_NPROC)


def check_choice(choices: type[E], *, note: str = "") -> Callable[[str, Any], E]:
    """A check for one of ``choices``' values (a str Enum), returning the member.

    Args:
        choices: the Enum whose values are allowed, in the order the error lists them.
        note: appended to the error, e.g. to tell two similar keys apart.
    """
    values = tuple(str(member.value) for member in choices)

    def check(path: str, value: Any) -> E:
        if value not in values:
            raise fail(path, value, f"allowed: {', '.join(values)}{did_you_mean(str(value), values)}{note}")
        return choices(str(value))

    return check


def check_open_choice(choices: type[E], *, note: str = "") -> Callable[[str, Any], E | str]:
    """Like :func:`check_choice`, but a name that is none of them is kept as text (a plugin's).

    A value close to one of ``choices`` is a typo and refused with a did-you-mean;
    another name is checked where it is looked up (e.g. the scheduler registry).
    """
    values = tuple(str(member.value) for member in choices)

    def check(path: str, value: Any) -> E | str:
        if value in values:
            return choices(str(value))
        hint = did_you_mean(str(value), values)
        if hint or not isinstance(value, str) or not NAME_RE.match(value):
            raise fail(path, value, f"allowed: {', '.join(values)}{hint}{note}")
        return value

    return check


def check_name(path: str, value: Any) -> str | None:
    """Null or a name that becomes a directory and MLflow name (:data:`NAME_RE`; a number reads as text)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # "--set tracking.experiment=2024" reads as a number
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise fail(
            path,
            value,
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it becomes a directory name)",
        )
    return value


def check_experiment(path: str, value: Any) -> str:
    """An MLflow experiment name (as :func:`check_name`, but not null)."""
    checked = check_name(path, value)
    if checked is None:
        raise fail(path, value, "give an experiment name such as ner")
    return checked


def check_opt_str(path: str, value: Any) -> str | None:
    """Null or a non-empty string without NUL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise fail(path, value, "use a non-empty string or null")
    return value


def check_path_str(path: str, value: Any) -> str:
    """A directory path (a ``Path`` is taken as its text)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise fail(path, value, "use a directory path")
    return value


def check_module(path: str, value: Any) -> str | None:
    """Null or a dotted module name (``mypkg.train``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _MODULE_RE.match(value):
        raise fail(path, value, "use a dotted module name such as mypkg.train")
    return value


def check_args(path: str, value: Any) -> tuple[str, ...]:
    """A list of command-line arguments, one item each (numbers become text); null is none."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise fail(
            path, value, "use a list of arguments, one item each (no shell string): [--lr, '3e-5']"
        )
    if not isinstance(value, (list, tuple)):
        raise fail(path, value, "use a list of strings")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise fail(f"{path}[{i}]", item, "each argument must be a string or number")
        out.append(str(item))
    return tuple(out)


def check_env(path: str, value: Any) -> Mapping[str, str]:
    """A mapping of environment variables, ``NAME: value`` (values become text; ``true`` -> ``"true"``)."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise fail(path, value, "use a mapping of NAME: value")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise fail(f"{path}.{key}", key, "environment variable names are [A-Za-z_][A-Za-z0-9_]*")
        if isinstance(item, (dict, list)) or item is None:
            raise fail(f"{path}.{key}", item, "use a string or number")
        out[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return MappingProxyType(out)


def check_nnodes(path: str, value: Any) -> int | str:
    """A number of nodes, 1 to :data:`MAX_NODES`, or an elastic range ``"MIN:MAX"`` (``"2"`` reads as 2)."""
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    match = _NNODES_RE.match(text) if text is not None else None
    rule = f'use a number of nodes (1-{MAX_NODES}) or an elastic range "MIN:MAX" such as "1:4"'
    if match is None:
        raise fail(path, value, rule)
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not 1 <= low <= high <= MAX_NODES:
        raise fail(path, value, rule)
    return low if match.group(2) is None else f"{low}:{high}"


def check_endpoint(path: str, value: Any) -> str | None:
    """Null or ``HOST:PORT`` (port 1-65535; an IPv6 host in brackets)."""
    if value is None:
        return None
    match = _HOST_PORT_RE.match(value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise fail(path, value, "use HOST:PORT of node 0, e.g. 10.0.0.5:29500 (port 1-65535)")
    return value


def check_pattern(regex: re.Pattern[str], rule: str) -> Check:
    """A check for null or a string matching ``regex`` (a number reads as text); ``rule`` says what is allowed."""

    def check(path: str, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not regex.match(value):
            raise fail(path, value, rule)
        return value

    return check


def check_options(example: str) -> Check:
    """A check for a scheduler's options section (``launch.slurm``): null or a mapping, kept as given.

    Its keys and values are the scheduler's to check (:func:`check_section`, from
    its options module): the config cannot know them without importing it.

    Args:
        example: shown when the value is not a mapping, e.g. ``{partition: gpu}``.
    """

    def check(path: str, value: Any) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise fail(path, value, f"use a mapping of option: value, e.g. {example}")
        return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})

    return check


def check_section(path: str, value: Any, checks: Mapping[str, Check]) -> dict[str, Any]:
    """Check a scheduler's options mapping key by key; unknown keys get a did-you-mean.

    Returns:
        The checked values, without unset ones (null, an empty list).
    """
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise fail(path, value, f"use a mapping with keys: {', '.join(checks)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in checks:
            raise fail(f"{path}.{key}", item,
                       f"unknown key{did_you_mean(str(key), checks)}; allowed: {', '.join(checks)}")
        checked = checks[key](f"{path}.{key}", item)
        if checked is not None and checked != ():
            out[key] = checked
    return out
