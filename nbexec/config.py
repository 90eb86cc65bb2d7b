"""Training config: load (YAML, JSON, dict, string), override, validate, hash.

A config has nbexec's own sections, validated strictly here, and the trainer's
sections (``model``, ``training``, ``data``). For a trainer with a spec (the
built-in one; :mod:`nbexec.trainer_spec`) those are checked and resolved by it:
the config holds the values the job runs with, defaults included, so
``config.yaml``, the MLflow params and the config hash all say what ran. A
script of the user's own gets them as given (each must be a mapping).

    model:    {backbone: tiny-encoder}
    training: {learning_rate: 2.0e-5, batch_size: 16, epochs: 2}
    data:     {path: outputs/data/synthetic-ner}
    launch:   {nproc: auto, backend: auto, entrypoint: null, module: null, args: [],
               nnodes: 1, node_rank: 0, rdzv_endpoint: null, rdzv_id: null,
               scheduler: local, slurm: {}, azureml: {}}
    output:   {dir: outputs, run_name: null}
    tracking: {enabled: true, uri: null, experiment: nbexec}
    backup:   {enabled: false, target: null}

Choices are str Enums (:class:`Scheduler`, :class:`Backend`, :class:`MetricsFrom`):
they compare equal to their text (``cfg.launch.scheduler == "local"``) and are
written as plain text by :meth:`TrainingConfig.to_dict`. ``launch.slurm`` and
``launch.azureml`` are kept as given (a mapping): their keys are the
schedulers' to check (``nbexec.schedulers.<name>.options``), which
:func:`nbexec.executor.prepare` does before anything is spawned; this module
imports nothing from :mod:`nbexec.schedulers`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nbexec.config_fields import (  # noqa: F401 - MAX_NPROC, NAME_RE: re-exported
    MAX_NODES,
    MAX_NPROC,
    NAME_RE,
    Check,
    check_args,
    check_bool,
    check_choice,
    check_collective_timeout,
    check_endpoint,
    check_env,
    check_experiment,
    check_int,
    check_module,
    check_name,
    check_nnodes,
    check_nproc,
    check_open_choice,
    check_opt_str,
    check_options,
    check_path_str,
    check_seconds,
    check_stall_timeout,
    did_you_mean,
    int_or_none,
)
from nbexec.errors import ConfigError
from nbexec.hashing import canonical_sha256
from nbexec.trainer_spec import trainer_spec

TRAINER_SECTIONS = ("model", "training", "data")
_PLACEMENT_KEYS = ("node_rank", "rdzv_endpoint", "rdzv_id", "scheduler", "slurm", "azureml")
# How a job is watched for hangs: none of it shapes the model, so none of it is in the config hash.
_WATCH_KEYS = ("stall_timeout", "on_stall", "collective_timeout")
DEFAULT_STALL_TIMEOUT_S = 300.0
BUILTIN_TRAINER_MODULE = "nbexec.trainers.token_classification"


class _Choice(str, Enum):
    """A config choice: equal to, hashed and formatted as its text (``f"{x}"`` is ``"local"``)."""

    def __str__(self) -> str:
        return str(self.value)


class Scheduler(_Choice):
    """``launch.scheduler``: who runs the job (``launch.backend`` is torch.distributed's, not this)."""

    LOCAL = "local"  # torchrun on this machine (or on each node given, with launch.nnodes > 1)
    SLURM = "slurm"  # an sbatch job
    AZUREML = "azureml"  # an AzureML command job


class Backend(_Choice):
    """``launch.backend``: torch.distributed's process-group backend (``auto``: nccl with GPUs, else gloo)."""

    AUTO = "auto"
    GLOO = "gloo"
    NCCL = "nccl"


class OnStall(_Choice):
    """``launch.on_stall``: what nbexec does when a job stalls (after saying so and taking the stacks)."""

    WARN = "warn"  # say so, tag the MLflow run; the job goes on (it may recover)
    CANCEL = "cancel"  # stop the job; it ends FAILED with the stuck rank as its root cause


class MetricsFrom(_Choice):
    """``tracking.metrics_from``: who sends metrics to MLflow (see :class:`TrackingConfig`)."""

    PARENT = "parent"
    RANK0 = "rank0"


SCHEDULERS = tuple(s.value for s in Scheduler)
BACKENDS = tuple(b.value for b in Backend)


@dataclass(frozen=True)
class LaunchConfig:
    """How the job is launched.

    ``nproc`` is ``"auto"`` or a positive int. ``entrypoint`` (a script path)
    and ``module`` (``pkg.mod``) are exclusive; with neither, the built-in
    reference trainer runs. ``args`` are passed to the script untouched.
    """

    nproc: int | str = "auto"
    backend: Backend = Backend.AUTO
    entrypoint: str | None = None
    module: str | None = None
    args: tuple[str, ...] = ()
    max_restarts: int = 0
    omp_num_threads: int | None = None
    oversubscribe: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Scaling out (nbexec.schedulers): ``backend`` above is torch.distributed's
    # (gloo/nccl); ``scheduler`` is who runs the job: local, slurm or azureml.
    nnodes: int | str = 1  # or an elastic range "1:4"
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # host:port of node 0's c10d rendezvous
    rdzv_id: str | None = None  # default: node 0's run name
    scheduler: Scheduler | str = Scheduler.LOCAL  # text: a scheduler a plugin registered
    # Each scheduler's options as given; its options class checks them (SlurmOptions, AzureMLOptions).
    slurm: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    azureml: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # When a job hangs (nbexec.runner.stall): no rank printed or progressed for stall_timeout
    # seconds (0: off), or one rank's step fell behind the others' and stayed there that long.
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S
    on_stall: OnStall = OnStall.WARN
    # The process group's timeout in seconds (None: torch's, 30 min on gloo, 10 on NCCL); through
    # the child API, and $NBEXEC_COLLECTIVE_TIMEOUT for scripts that init the group themselves.
    collective_timeout: float | None = None

    def __post_init__(self) -> None:
        # text given directly (LaunchConfig(scheduler="slurm")) becomes the member, as a loaded config has
        object.__setattr__(self, "backend", Backend(self.backend))
        object.__setattr__(self, "on_stall", OnStall(self.on_stall))
        if self.scheduler in SCHEDULERS:
            object.__setattr__(self, "scheduler", Scheduler(self.scheduler))

    @property
    def max_nodes(self) -> int:
        """The largest number of nodes the job may have (``nnodes`` or its range's top)."""
        return int(str(self.nnodes).rpartition(":")[2])

    @property
    def is_multinode(self) -> bool:
        """True when more than one node takes part (or may, with an elastic range)."""
        return self.max_nodes > 1

    @property
    def target_module(self) -> str | None:
        """The module to run with ``-m``: the user's, or the built-in trainer's."""
        if self.entrypoint is None and self.module is None:
            return BUILTIN_TRAINER_MODULE
        return self.module


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "outputs"
    run_name: str | None = None


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking. ``metrics_from``: who sends metrics to MLflow — the
    ``parent`` (from rank 0's events; costs the training loop nothing) or
    ``rank0`` itself (batched in a background thread; also works when the
    parent is gone, e.g. a job that outlives a notebook session).
    ``required``: open the run before anything is spawned, so a store that
    refuses it stops the launch (by default the run is opened while the job
    starts, and a job whose run cannot be opened goes on untracked, saying so).
    ``timeout``: seconds nbexec waits for MLflow to open or end the run; past
    that the job goes on (or its result is written) without it."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "nbexec"
    metrics_from: MetricsFrom = MetricsFrom.PARENT
    required: bool = False
    timeout: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics_from", MetricsFrom(self.metrics_from))


@dataclass(frozen=True)
class BackupConfig:
    enabled: bool = False
    target: str | None = None


_SECTIONS: dict[str, type] = {
    "launch": LaunchConfig,
    "output": OutputConfig,
    "tracking": TrackingConfig,
    "backup": BackupConfig,
}
ALL_SECTIONS = (*TRAINER_SECTIONS, *_SECTIONS)

# section -> key -> check (nbexec.config_fields): what each of nbexec's own keys accepts.
CHECKS: dict[str, dict[str, Check]] = {
    "launch": {
        "nproc": check_nproc,
        "backend": check_choice(Backend),
        "entrypoint": check_opt_str,
        "module": check_module,
        "args": check_args,
        "max_restarts": lambda p, v: check_int(p, v, low=0, high=100),
        "omp_num_threads": int_or_none(1, 1024),
        "oversubscribe": check_bool,
        "env": check_env,
        "nnodes": check_nnodes,
        "node_rank": lambda p, v: check_int(p, v, low=0, high=MAX_NODES - 1),
        "rdzv_endpoint": check_endpoint,
        "rdzv_id": check_name,
        "scheduler": check_open_choice(  # or a scheduler registered by a plugin (nbexec.schedulers.register)
            Scheduler, note=" (launch.backend is torch.distributed's gloo/nccl; launch.scheduler runs the job)"
        ),
        "slurm": check_options("{partition: gpu, gpus_per_node: 4}"),
        "azureml": check_options("{compute: gpu-cluster}"),
        "stall_timeout": check_stall_timeout,
        "on_stall": check_choice(OnStall),
        "collective_timeout": check_collective_timeout,
    },
    "output": {"dir": check_path_str, "run_name": check_name},
    "tracking": {
        "enabled": check_bool,
        "uri": check_opt_str,
        "experiment": check_experiment,
        "metrics_from": check_choice(MetricsFrom),
        "required": check_bool,
        "timeout": lambda p, v: check_seconds(p, v, low=1, high=3600),
    },
    "backup": {"enabled": check_bool, "target": check_opt_str},
}


@dataclass(frozen=True)
class TrainingConfig:
    """A validated training config with every default filled in.

    Build one with :func:`load_config`. Trainer sections are read-only mappings.
    """

    model: Mapping[str, Any]
    training: Mapping[str, Any]
    data: Mapping[str, Any]
    launch: LaunchConfig = LaunchConfig()
    output: OutputConfig = OutputConfig()
    tracking: TrackingConfig = TrackingConfig()
    backup: BackupConfig = BackupConfig()

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain, JSON-able data (a fresh copy)."""
        out: dict[str, Any] = {name: _thaw(getattr(self, name)) for name in TRAINER_SECTIONS}
        for name in _SECTIONS:
            section = getattr(self, name)
            out[name] = {f.name: _thaw(getattr(section, f.name)) for f in fields(section)}
        return out

    @property
    def config_hash(self) -> str:
        """sha256 (16 hex chars) of what shapes the trained model.

        Covers ``model``, ``training``, ``data`` and ``launch``; not where outputs
        go, tracking or backup. Key order never matters.
        """
        d = self.to_dict()
        payload = {k: d[k] for k in (*TRAINER_SECTIONS, "launch")}
        # Where and by whom a job runs does not shape the model: every node of
        # one job has the same hash, and single-node hashes are unchanged.
        for key in (*_PLACEMENT_KEYS, *_WATCH_KEYS):
            payload["launch"].pop(key, None)
        if payload["launch"].get("nnodes") == 1:
            del payload["launch"]["nnodes"]
        # the lenient rule and 16 chars: what config hashes always were (MLflow tags, run dirs)
        return canonical_sha256(payload, lenient=True)[:16]

    def __repr__(self) -> str:
        from nbexec.redact import split_secrets

        clean, _ = split_secrets(self.to_dict())  # a notebook shows reprs: no secrets
        return f"TrainingConfig({clean!r})"

    def with_overrides(self, overrides: Iterable[str]) -> TrainingConfig:
        """A new config with ``key.path=value`` overrides applied and re-validated."""
        return load_config(self.to_dict(), overrides=overrides)


def load_config(
    source: str | Path | Mapping[str, Any] | TrainingConfig | None = None,
    *,
    overrides: Iterable[str] = (),
) -> TrainingConfig:
    """Load, override and validate a training config.

    Args:
        source: a path to a ``.yaml``/``.yml``/``.json`` file, a YAML/JSON string
            (e.g. a notebook cell body), a dict, an existing config, or None for
            the embedded defaults (the reference trainer on synthetic data).
        overrides: ``"training.learning_rate=3e-5"`` style assignments; values
            are parsed as YAML scalars/lists (``3e-5``, ``true``, ``[a, b]``).

    Returns:
        A validated :class:`TrainingConfig`.

    Raises:
        ConfigError: naming the field, the bad value and what is allowed.
    """
    if isinstance(source, TrainingConfig):
        raw = source.to_dict()
    elif source is None:
        raw = {}
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    elif isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        raw = _read_file(Path(source))
    elif isinstance(source, str):
        raw = _parse_text(source, origin="config text")
    else:
        raise ConfigError(
            f"config must be a path, a YAML/JSON string or a dict, not {type(source).__name__}",
            value=source,
        )
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides must be a list of key=value strings, not one string: use [{overrides!r}]",
            value=overrides,
        )
    for item in overrides:
        _apply_override(raw, item)
    return _validate(raw)


def _looks_like_path(text: str) -> bool:
    """A one-line string without YAML structure is a path (existing or not)."""
    stripped = text.strip()
    if "\n" in stripped or not stripped:
        return False
    if stripped.endswith((".yaml", ".yml", ".json")):
        return True
    return ": " not in stripped and not stripped.startswith(("{", "[")) and not stripped.endswith(":")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass an existing .yaml/.json path",
            value=str(path),
        )
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(
            f"config file {str(path)!r} has suffix {path.suffix!r}; allowed: .yaml, .yml, .json",
            value=str(path),
        )
    return _parse_text(path.read_text(encoding="utf-8"), origin=str(path))


# Bounds on a config document, so a hostile or broken file fails fast instead of
# expanding for minutes ("billion laughs": 9 lines of nested aliases are 10^9 values)
# or overflowing the stack. Real configs are a few hundred values, a few levels deep.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64


class _ShapeError(Exception):
    """A document too large, too deep or recursive (the message says which and where)."""


def _parse_text(text: str, *, origin: str) -> dict[str, Any]:
    import yaml

    data: Any
    if origin.endswith(".json") or text.lstrip().startswith("{"):
        try:  # real JSON first: YAML rejects some valid JSON (tab indentation)
            data = json.loads(text)
        except RecursionError:
            raise _shape_error(origin, text, _ShapeError(_too_deep(""))) from None
        except ValueError:
            data = None
        else:
            try:
                _check_json_depth(data)
            except _ShapeError as err:
                raise _shape_error(origin, text, err) from None
            return _check_mapping(data, origin)
    try:
        data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML/JSON: {err}", value=text[:200]) from err
    except RecursionError:  # PyYAML composes nested collections recursively
        raise _shape_error(origin, text, _ShapeError(_too_deep(""))) from None
    except _ShapeError as err:
        raise _shape_error(origin, text, err) from None
    return _check_mapping(data, origin)


def _shape_error(origin: str, text: str, err: _ShapeError) -> ConfigError:
    return ConfigError(f"{origin}: {err}", value=text[:200])


def _too_deep(where: str) -> str:
    return (f"it is nested more than {MAX_CONFIG_DEPTH} levels deep{where}; "
            "a config is a few sections of keys and short lists: flatten it")


def _check_json_depth(data: Any) -> None:
    todo = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_CONFIG_DEPTH:
                raise _ShapeError(_too_deep(""))
            todo += [(v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)]


def _check_node_tree(root: Any) -> None:
    """Refuse a composed YAML document that is recursive, too deep, or expands too far.

    Aliases make the node graph a DAG whose expanded size can be exponential in
    its length; sizes are summed per distinct node (memoised), so this check is
    linear in the document, and runs before anything is constructed.

    Raises:
        _ShapeError: naming the line and what to do.
    """
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            active.discard(key)
            kids = children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            line = f" (line {node.start_mark.line + 1})"
            if depth[key] > MAX_CONFIG_DEPTH:
                raise _ShapeError(_too_deep(line))
            if size[key] > MAX_CONFIG_VALUES:
                raise _ShapeError(
                    f"its YAML aliases expand to more than {MAX_CONFIG_VALUES} values{line}, far more than "
                    "a config holds (an alias bomb?); write the values out, or use fewer aliases (*name)"
                    if len(size) < MAX_CONFIG_VALUES else
                    f"it has more than {MAX_CONFIG_VALUES} values{line}, far more than a config holds; "
                    "keep data in files and give their paths (e.g. data.path)"
                )
            continue
        if key in size:
            continue
        if key in active:
            raise _ShapeError(
                f"a YAML alias refers to itself (the collection at line {node.start_mark.line + 1} contains "
                "itself); a config must be a tree: write the values out"
            )
        active.add(key)
        stack.append((node, True))
        stack += [(k, False) for k in children(node) if id(k) not in size]


def _loader() -> type:
    """PyYAML's SafeLoader, but reading ``3e-5`` as a float (YAML 1.2), not a string, and
    refusing documents that are recursive or expand too far (:func:`_check_node_tree`)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            def compose_document(self) -> Any:
                node = super().compose_document()
                if node is not None:
                    _check_node_tree(node)
                return node

        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
            list("-+0123456789."),
        )
        _LOADER = Loader
    return _LOADER


_LOADER: type | None = None


def _check_mapping(data: Any, origin: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin} must be a mapping of sections (model:, training:, ...), "
            f"not a {type(data).__name__}",
            value=data,
        )
    return data


def parse_value(text: str) -> Any:
    """A config value written as text (an override's right side, an MLflow param), read as
    YAML 1.2 would (``1e-5`` is a float, not a string); text YAML cannot read stays text.

    Raises:
        ConfigError: the text is a recursive, too deep or too large structure (an alias bomb).
    """
    import yaml

    try:
        return yaml.load(text, Loader=_loader()) if text.strip() else None  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(_too_deep(""), value=text[:200]) from None
    except _ShapeError as err:
        raise ConfigError(str(err), value=text[:200]) from None


def quote_value(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that :func:`parse_value` reads back unchanged.

    For building ``key=value`` overrides from paths and names. Printable
    characters stay as they are (any Unicode: JSON's ``\\ud83d\\ude00``
    surrogate pairs for an emoji would read back as two lone surrogates);
    control characters, YAML line breaks (NEL, U+2028/9), BOMs and lone
    surrogates become ``\\uXXXX`` escapes.
    """
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif (0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code > 0xFFFF) \
                and char not in "\u2028\u2029\ufeff":
            out.append(char)
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like section.key=value "
            "(e.g. training.learning_rate=3e-5)",
            value=item,
        )
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"override key {key!r} must be a dotted path with a section, "
            f"e.g. training.{key or 'epochs'}; sections: {', '.join(ALL_SECTIONS)}",
            field=key,
            value=item,
        )
    try:
        value = parse_value(text)
    except ConfigError as err:
        raise ConfigError(f"override {key}=...: {err}", field=key, value=text[:200]) from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"override {item!r}: {where} is a {type(child).__name__}, not a section",
                field=where,
                value=child,
            )
        node = child
    node[parts[-1]] = value


def _validate(raw: dict[str, Any]) -> TrainingConfig:
    for name in raw:
        if name not in ALL_SECTIONS:
            raise ConfigError(
                f"unknown config section {name!r}{did_you_mean(str(name), ALL_SECTIONS)}; "
                f"allowed sections: {', '.join(ALL_SECTIONS)}",
                field=str(name),
                value=raw[name],
            )
    trainer: dict[str, Mapping[str, Any]] = {}
    for name in TRAINER_SECTIONS:
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(
                f"{name} must be a mapping (e.g. {name}: {{key: value}}), "
                f"got {type(section).__name__} {section!r}",
                field=name,
                value=section,
            )
        trainer[name] = _freeze(section)
    own = {name: _build_section(name, raw.get(name)) for name in _SECTIONS}
    config = TrainingConfig(model=trainer["model"], training=trainer["training"], data=trainer["data"], **own)
    _check_cross_fields(config)
    spec = trainer_spec(config.launch.target_module)
    if spec is not None:
        # The trainer's own fields, checked and with its defaults filled in: the config says what
        # runs (config.yaml, MLflow params, the hash). A script of the user's own has no spec: as given.
        resolved = spec.resolve({"model": config.model, "training": config.training, "data": config.data})
        config = dataclasses.replace(config, **{name: _freeze(resolved.get(name) or {}) for name in TRAINER_SECTIONS})
    return config


def _build_section(name: str, value: Any) -> Any:
    cls = _SECTIONS[name]
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{name} must be a mapping, got {type(value).__name__} {value!r}",
            field=name,
            value=value,
        )
    allowed = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown key {name}.{key}{did_you_mean(str(key), allowed)}; "
                f"allowed in {name}: {', '.join(allowed)}",
                field=f"{name}.{key}",
                value=item,
            )
        kwargs[key] = CHECKS[name][key](f"{name}.{key}", item)
    return cls(**kwargs)


def _check_cross_fields(config: TrainingConfig) -> None:
    launch = config.launch
    if launch.entrypoint is not None and launch.module is not None:
        raise ConfigError(
            f"launch.entrypoint ({launch.entrypoint!r}) and launch.module ({launch.module!r}) "
            "are exclusive; set one (or neither, for the built-in trainer)",
            field="launch.entrypoint",
            value=launch.entrypoint,
        )
    _check_scale_out(launch)


def _check_scale_out(launch: LaunchConfig) -> None:
    """Cross-field rules of the scale-out keys (a scheduler's own options are its to check).

    Raises:
        ConfigError: naming the field and what to change.
    """
    if launch.node_rank >= launch.max_nodes:
        raise ConfigError(
            f"launch.node_rank = {launch.node_rank} is not below launch.nnodes = {launch.nnodes}; "
            f"node ranks run from 0 to {launch.max_nodes - 1}",
            field="launch.node_rank", value=launch.node_rank,
        )
    if launch.scheduler == Scheduler.LOCAL and launch.is_multinode and launch.rdzv_endpoint is None:
        raise ConfigError(
            f"launch.nnodes = {launch.nnodes} needs launch.rdzv_endpoint: the HOST:PORT of node 0 "
            "(an address every node can reach, and a free port), e.g. --rdzv-endpoint 10.0.0.5:29500",
            field="launch.rdzv_endpoint", value=None,
        )
    if launch.scheduler != Scheduler.LOCAL and (launch.node_rank != 0 or launch.rdzv_endpoint is not None):
        field = "launch.node_rank" if launch.node_rank != 0 else "launch.rdzv_endpoint"
        raise ConfigError(
            f"{field} is set, but launch.scheduler = {str(launch.scheduler)!r} places the nodes itself; "
            "leave node_rank and rdzv_endpoint unset (they are for launch.scheduler: local)",
            field=field, value=getattr(launch, field.split(".")[1]),
        )
    if launch.node_rank > 0 and launch.rdzv_id is None:
        raise ConfigError(
            f"launch.node_rank = {launch.node_rank} needs launch.rdzv_id, the id node 0 uses "
            "(node 0 prints the exact command for every other node, --rdzv-id included)",
            field="launch.rdzv_id", value=None,
        )


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value  # plain text: YAML's safe dumper refuses an Enum, and hashes must not change
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
