"""``launch.azureml``: the options of an AzureML command job, typed and checked.

    launch:
      scheduler: azureml
      azureml: {compute: gpu-cluster, environment: "azureml:acpt-pytorch:1", gpus_per_node: 4}

The config keeps ``launch.azureml`` as given (it imports no scheduler);
:func:`azureml_options` checks it, and :func:`nbexec.executor.prepare` calls
it, so a bad value is refused before anything is written or submitted.
Standard library only: nothing from Azure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbexec.config_fields import Check, check_name, check_pattern, check_section, int_or_none

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig

SECTION = "launch.azureml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")

# key -> check, in the order errors list the keys
_CHECKS: dict[str, Check] = {
    "compute": check_pattern(_NAME_RE, "use the name of an AzureML compute cluster"),
    "environment": check_pattern(_NAME_RE, 'use an AzureML environment, e.g. "azureml:my-env:1"'),
    "instance_type": check_pattern(_NAME_RE, "use an AzureML instance type name"),
    "gpus_per_node": int_or_none(0, 64),
    "experiment": check_name,
    "display_name": check_name,
    "subscription_id": check_pattern(_NAME_RE, "use an Azure subscription id"),
    "resource_group": check_pattern(_NAME_RE, "use an Azure resource group name"),
    "workspace": check_pattern(_NAME_RE, "use an AzureML workspace name"),
    "code": check_pattern(re.compile(r"^[^\x00\n]+$"), "use a directory path"),
}


@dataclass(frozen=True)
class AzureMLOptions:
    """Where and how the command job runs (None: the default named).

    Attributes:
        compute: the compute cluster's name (needed to submit; a dry run goes without).
        environment: the AzureML environment (None: a curated PyTorch one, ``job.DEFAULT_ENVIRONMENT``).
        instance_type: the cluster's instance type, if it has several.
        gpus_per_node: GPUs of each node (None or 0: CPU processes).
        experiment: the AzureML experiment (None: ``tracking.experiment``).
        display_name: the job's name in the studio (None: the run name).
        subscription_id, resource_group, workspace: the workspace (None: from
            ``AZURE_SUBSCRIPTION_ID`` / ``AZURE_RESOURCE_GROUP`` / ``AZUREML_WORKSPACE_NAME``).
        code: the folder uploaded as the job's code (None: the working directory).
    """

    compute: str | None = None
    environment: str | None = None
    instance_type: str | None = None
    gpus_per_node: int | None = None
    experiment: str | None = None
    display_name: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    code: str | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, *, path: str = SECTION) -> AzureMLOptions:
        """Check ``launch.azureml`` as the config holds it (numbers given for names read as text).

        Raises:
            ConfigError: naming ``launch.azureml.<key>``, the value and what is allowed
                (an unknown key gets a did-you-mean).
        """
        return cls(**check_section(path, raw, _CHECKS))


def azureml_options(config: TrainingConfig) -> AzureMLOptions:
    """``config``'s ``launch.azureml``, checked (see :meth:`AzureMLOptions.from_config`).

    Raises:
        ConfigError: a key or value ``launch.azureml`` does not allow.
    """
    return AzureMLOptions.from_config(config.launch.azureml)
