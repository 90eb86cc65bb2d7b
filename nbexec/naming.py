"""Run names: a project's naming policy, with a built-in fallback.

A policy is a file ``naming.yaml`` in the config directory:

    run_name: "{backbone}-{stage}-{timestamp}"

Fields: ``backbone``, ``stage``, ``experiment``, ``timestamp``
(``YYYYmmdd-HHMMSS``), ``date`` (``YYYYmmdd``), ``config_hash`` (8 hex),
``rand`` (6 hex), ``what`` (backbone, script or module name) and any trainer
value by dotted path (``{training.learning_rate}``). When the policy file is
missing or a field in it is unknown, the built-in pattern
``{timestamp}-{what}-{rand}`` is used: the part that differs between runs comes
first, because lists that cut long names (MLflow's runs table shows about 22
characters) would otherwise show every run of a model as the same
``tiny-encoder-2026…``; and run directories sort by time. Names are always safe directory names
(letters, digits, ``._-``; no separators, no ``..``) and unique among the names
``taken`` reports.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbexec.config import NAME_RE, TrainingConfig

POLICY_FILE = "naming.yaml"
FALLBACK_PATTERN = "{timestamp}-{what}-{rand}"
MAX_LEN = 128


def build_training_run_name_with_fallback(
    config: TrainingConfig,
    *,
    stage: str = "train",
    config_dir: str | Path | None = None,
    taken: Callable[[str], bool] | None = None,
    now: float | None = None,
) -> str:
    """The run name for ``config``: ``output.run_name`` if set, else by policy.

    Args:
        config: the resolved config.
        stage: the workflow step (``train``, ``hpo``, ``final``...).
        config_dir: where ``naming.yaml`` lives. Trusted as given; only when
            None is it inferred (``./config`` if that directory exists, else
            the working directory).
        taken: tells whether a name is already used (e.g. a run dir exists, or
            the experiment has a run of that name); ``-2``, ``-3``... is added
            until it is not.
        now: the time to stamp (default: now).

    Returns:
        A name matching ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
    """
    if config.output.run_name:
        return config.output.run_name  # the user's explicit choice is never rewritten
    fields = _fields(config, stage, now)
    pattern = read_policy(_infer_config_dir(config_dir)) or FALLBACK_PATTERN
    name = _render(pattern, fields, config) if pattern != FALLBACK_PATTERN else None
    if name is None:
        name = _render(FALLBACK_PATTERN, fields, config)
    assert name is not None
    return _unique(name, taken)


def read_policy(config_dir: Path) -> str | None:
    """The ``run_name`` pattern of ``<config_dir>/naming.yaml``, or None."""
    path = config_dir / POLICY_FILE
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    pattern = data.get("run_name") if isinstance(data, dict) else None
    return pattern if isinstance(pattern, str) and pattern.strip() else None


def _infer_config_dir(config_dir: str | Path | None) -> Path:
    if config_dir is not None:
        return Path(config_dir)
    local = Path.cwd() / "config"
    return local if local.is_dir() else Path.cwd()


def _fields(config: TrainingConfig, stage: str, now: float | None) -> dict[str, str]:
    from nbexec.trainer_spec import trainer_spec

    launch = config.launch
    spec = trainer_spec(launch.target_module)
    default = spec.defaults.get("model", {}).get("backbone") if spec is not None else None
    backbone = str(config.model.get("backbone") or default or "")
    if launch.entrypoint:
        what = Path(launch.entrypoint).stem
    elif launch.module:
        what = launch.module.rsplit(".", 1)[-1]
    else:
        what = backbone
    stamp = time.localtime(now)
    return {
        "what": what,
        "backbone": backbone,
        "stage": stage,
        "experiment": config.tracking.experiment,
        "timestamp": time.strftime("%Y%m%d-%H%M%S", stamp),
        "date": time.strftime("%Y%m%d", stamp),
        "config_hash": config.config_hash[:8],
        "rand": secrets.token_hex(3),
    }


def _render(pattern: str, fields: dict[str, str], config: TrainingConfig) -> str | None:
    """Fill the pattern; None when it names an unknown field or yields no usable name."""
    out = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError:
        return None
    for literal, field, spec, _ in parsed:
        out.append(literal)
        if field is None:
            continue
        value = fields.get(field)
        if value is None:
            value = _dotted(config, field)
        if value is None:
            return None
        out.append(_sanitize(format(value, spec or "")))
    name = _sanitize("".join(out))
    return name if name and NAME_RE.match(name) else None


def _dotted(config: TrainingConfig, path: str) -> Any:
    section, _, rest = path.partition(".")
    node: Any = config.to_dict().get(section)
    for part in rest.split(".") if rest else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None or isinstance(node, (dict, list)) else node


def _sanitize(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"\.{2,}", ".", text)  # never ".."
    return text.strip(".-_")[:MAX_LEN].rstrip(".-_")


def _unique(name: str, taken: Callable[[str], bool] | None) -> str:
    if taken is None or not taken(name):
        return name
    for n in range(2, 10_000):
        suffix = f"-{n}"
        candidate = name[: MAX_LEN - len(suffix)] + suffix
        if not taken(candidate):
            return candidate
    return f"{name[: MAX_LEN - 7]}-{secrets.token_hex(3)}"
