"""Config checks for the scale-out keys of ``launch``.

    launch:
      nnodes: 2                      # or an elastic range "1:4"
      node_rank: 0                   # this machine's place (0 hosts the rendezvous)
      rdzv_endpoint: 10.0.0.5:29500  # node 0's address and a free port
      rdzv_id: my-job                # default: node 0's run name
      scheduler: local               # local | slurm | azureml  (``launch.backend`` is gloo/nccl)
      slurm:   {partition: gpu, account: proj, time: "01:00:00", cpus_per_task: 8, gpus_per_node: 4}
      azureml: {compute: gpu-cluster, environment: "azureml:acpt-pytorch:1", ...}

Standard library only: config validation must not import a scheduler's client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nbexec.errors import ConfigError

if TYPE_CHECKING:
    from nbexec.config import LaunchConfig

SCHEDULERS = ("local", "slurm", "azureml")
MAX_NODES = 4096
_NNODES_RE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")
_SLURM_TIME_RE = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_SLURM_WORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,:+-]*$")  # partition, account, qos...
_SLURM_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_AZURE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")


# nbexec.config_fields imports this module while it builds its CHECKS table, so
# its helpers are imported when a check runs, not when this module loads.
def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    from nbexec.config_fields import _fail as fail

    return fail(path, value, allowed)


def _int(path: str, value: Any, *, low: int, high: int | None = None) -> int:
    from nbexec.config_fields import _int as check

    return check(path, value, low=low, high=high)


def _name(path: str, value: Any) -> str | None:
    from nbexec.config_fields import _name as check

    return check(path, value)


def did_you_mean(name: str, allowed: Any) -> str:
    from nbexec.config_fields import did_you_mean as hint

    return hint(name, allowed)


def _nnodes(path: str, value: Any) -> int | str:
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    match = _NNODES_RE.match(text) if text is not None else None
    rule = f'use a number of nodes (1-{MAX_NODES}) or an elastic range "MIN:MAX" such as "1:4"'
    if match is None:
        raise _fail(path, value, rule)
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not 1 <= low <= high <= MAX_NODES:
        raise _fail(path, value, rule)
    return low if match.group(2) is None else f"{low}:{high}"


def _endpoint(path: str, value: Any) -> str | None:
    if value is None:
        return None
    match = _HOST_PORT_RE.match(value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise _fail(path, value, "use HOST:PORT of node 0, e.g. 10.0.0.5:29500 (port 1-65535)")
    return value


def _scheduler(path: str, value: Any) -> str:
    if value not in SCHEDULERS:
        hint = did_you_mean(str(value), SCHEDULERS)
        note = " (launch.backend is torch.distributed's gloo/nccl; launch.scheduler runs the job)"
        raise _fail(path, value, f"allowed: {', '.join(SCHEDULERS)}{hint}{note}")
    return str(value)


def _word(regex: re.Pattern[str], rule: str):
    def check(path: str, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not regex.match(value):
            raise _fail(path, value, rule)
        return value

    return check


def _extra_args(path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _fail(path, value, 'use a list of sbatch options, one item each: ["--qos=high"]')
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.startswith("--") or "\n" in item:
            raise _fail(f"{path}[{i}]", item, 'each item is one "--option=value" sbatch option')
        out.append(item)
    return tuple(out)


SLURM_KEYS: dict[str, Any] = {
    "partition": _word(_SLURM_WORD_RE, "use a Slurm partition name"),
    "account": _word(_SLURM_WORD_RE, "use a Slurm account name"),
    "qos": _word(_SLURM_WORD_RE, "use a Slurm QOS name"),
    "constraint": _word(_SLURM_WORD_RE, "use a Slurm node feature expression"),
    "time": _word(_SLURM_TIME_RE, 'use a Slurm time limit: "MINUTES", "HH:MM:SS" or "D-HH:MM:SS"'),
    "mem": _word(_SLURM_MEM_RE, 'use a memory per node such as "32G"'),
    "cpus_per_task": lambda p, v: None if v is None else _int(p, v, low=1, high=4096),
    "gpus_per_node": lambda p, v: None if v is None else _int(p, v, low=0, high=64),
    "rdzv_port": lambda p, v: _int(p, v, low=1024, high=65535),
    "extra_args": _extra_args,
}

AZUREML_KEYS: dict[str, Any] = {
    "compute": _word(_AZURE_NAME_RE, "use the name of an AzureML compute cluster"),
    "environment": _word(_AZURE_NAME_RE, 'use an AzureML environment, e.g. "azureml:my-env:1"'),
    "instance_type": _word(_AZURE_NAME_RE, "use an AzureML instance type name"),
    "gpus_per_node": lambda p, v: None if v is None else _int(p, v, low=0, high=64),
    "experiment": _name,
    "display_name": _name,
    "subscription_id": _word(_AZURE_NAME_RE, "use an Azure subscription id"),
    "resource_group": _word(_AZURE_NAME_RE, "use an Azure resource group name"),
    "workspace": _word(_AZURE_NAME_RE, "use an AzureML workspace name"),
    "code": lambda p, v: None if v is None else _word(re.compile(r"^[^\x00\n]+$"), "use a directory path")(p, v),
}


def _section(keys: dict[str, Any], defaults: dict[str, Any]):
    def check(path: str, value: Any) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _fail(path, value, f"use a mapping with keys: {', '.join(keys)}")
        out = dict(defaults)
        for key, item in value.items():
            if key not in keys:
                raise _fail(f"{path}.{key}", item,
                            f"unknown key{did_you_mean(str(key), keys)}; allowed: {', '.join(keys)}")
            checked = keys[key](f"{path}.{key}", item)
            if checked is not None and checked != ():
                out[key] = checked
        return MappingProxyType(out)

    return check


LAUNCH_CHECKS: dict[str, Any] = {
    "nnodes": _nnodes,
    "node_rank": lambda p, v: _int(p, v, low=0, high=MAX_NODES - 1),
    "rdzv_endpoint": _endpoint,
    "rdzv_id": _name,
    "scheduler": _scheduler,
    "slurm": _section(SLURM_KEYS, {}),
    "azureml": _section(AZUREML_KEYS, {}),
}


def check_launch(launch: LaunchConfig) -> None:
    """Cross-field rules of the scale-out keys.

    Raises:
        ConfigError: naming the field and what to change.
    """
    if launch.node_rank >= launch.max_nodes:
        raise ConfigError(
            f"launch.node_rank = {launch.node_rank} is not below launch.nnodes = {launch.nnodes}; "
            f"node ranks run from 0 to {launch.max_nodes - 1}",
            field="launch.node_rank", value=launch.node_rank,
        )
    if launch.scheduler == "local" and launch.is_multinode and launch.rdzv_endpoint is None:
        raise ConfigError(
            f"launch.nnodes = {launch.nnodes} needs launch.rdzv_endpoint: the HOST:PORT of node 0 "
            "(an address every node can reach, and a free port), e.g. --rdzv-endpoint 10.0.0.5:29500",
            field="launch.rdzv_endpoint", value=None,
        )
    if launch.scheduler != "local" and (launch.node_rank != 0 or launch.rdzv_endpoint is not None):
        field = "launch.node_rank" if launch.node_rank != 0 else "launch.rdzv_endpoint"
        raise ConfigError(
            f"{field} is set, but launch.scheduler = {launch.scheduler!r} places the nodes itself; "
            "leave node_rank and rdzv_endpoint unset (they are for launch.scheduler: local)",
            field=field, value=getattr(launch, field.split(".")[1]),
        )
    if launch.node_rank > 0 and launch.rdzv_id is None:
        raise ConfigError(
            f"launch.node_rank = {launch.node_rank} needs launch.rdzv_id, the id node 0 uses "
            "(node 0 prints the exact command for every other node, --rdzv-id included)",
            field="launch.rdzv_id", value=None,
        )
