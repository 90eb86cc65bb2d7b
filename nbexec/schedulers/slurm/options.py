"""``launch.slurm``: the options of a Slurm job, typed and checked.

    launch:
      scheduler: slurm
      slurm: {partition: gpu, account: proj, time: "01:00:00", cpus_per_task: 8, gpus_per_node: 4}

The config keeps ``launch.slurm`` as given (it imports no scheduler);
:func:`slurm_options` checks it, and :func:`nbexec.executor.prepare` calls it,
so a bad value is refused before anything is written or submitted.
Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbexec.config_fields import Check, check_int, check_pattern, check_section, fail, int_or_none

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig

SECTION = "launch.slurm"
_TIME_RE = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_WORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,:+-]*$")  # partition, account, qos...
_MEM_RE = re.compile(r"^\d+[KMGT]?$")


def _extra_args(path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise fail(path, value, 'use a list of sbatch options, one item each: ["--qos=high"]')
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.startswith("--") or "\n" in item:
            raise fail(f"{path}[{i}]", item, 'each item is one "--option=value" sbatch option')
        out.append(item)
    return tuple(out)


# key -> check, in the order errors list the keys
_CHECKS: dict[str, Check] = {
    "partition": check_pattern(_WORD_RE, "use a Slurm partition name"),
    "account": check_pattern(_WORD_RE, "use a Slurm account name"),
    "qos": check_pattern(_WORD_RE, "use a Slurm QOS name"),
    "constraint": check_pattern(_WORD_RE, "use a Slurm node feature expression"),
    "time": check_pattern(_TIME_RE, 'use a Slurm time limit: "MINUTES", "HH:MM:SS" or "D-HH:MM:SS"'),
    "mem": check_pattern(_MEM_RE, 'use a memory per node such as "32G"'),
    "cpus_per_task": int_or_none(1, 4096),
    "gpus_per_node": int_or_none(0, 64),
    "rdzv_port": lambda p, v: check_int(p, v, low=1024, high=65535),
    "extra_args": _extra_args,
}


@dataclass(frozen=True)
class SlurmOptions:
    """The sbatch options of a job (None: Slurm's default).

    Attributes:
        partition, account, qos, constraint: ``--partition`` ... as named.
        time: ``--time`` (``"MINUTES"``, ``"HH:MM:SS"`` or ``"D-HH:MM:SS"``).
        mem: ``--mem``, memory per node (``"32G"``).
        cpus_per_task: ``--cpus-per-task`` of the one task per node (None: one per process).
        gpus_per_node: ``--gpus-per-node`` (None or 0: no GPUs asked for).
        extra_args: more ``--option=value`` sbatch options, one item each.
        rdzv_port: node 0's c10d rendezvous port in the allocation (None: the scheduler's default).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    constraint: str | None = None
    extra_args: tuple[str, ...] = ()
    rdzv_port: int | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, *, path: str = SECTION) -> SlurmOptions:
        """Check ``launch.slurm`` as the config holds it (numbers given for names read as text).

        Raises:
            ConfigError: naming ``launch.slurm.<key>``, the value and what is allowed
                (an unknown key gets a did-you-mean).
        """
        return cls(**check_section(path, raw, _CHECKS))


def slurm_options(config: TrainingConfig) -> SlurmOptions:
    """``config``'s ``launch.slurm``, checked (see :meth:`SlurmOptions.from_config`).

    Raises:
        ConfigError: a key or value ``launch.slurm`` does not allow.
    """
    return SlurmOptions.from_config(config.launch.slurm)
