"""The AzureML client: the workspace, credentials and ``MLClient``, shared by the submitter and the log streamer.

Needs the workspace (``launch.azureml.subscription_id`` / ``resource_group`` /
``workspace``, the ``AZURE_SUBSCRIPTION_ID`` / ``AZURE_RESOURCE_GROUP`` /
``AZUREML_WORKSPACE_NAME`` variables, or the portal's ``config.json``) and Azure
credentials (``az login``, a service principal's ``AZURE_CLIENT_ID`` /
``AZURE_TENANT_ID`` / ``AZURE_CLIENT_SECRET``, or a managed identity).

Test hook (only for tests; Azure cannot be reached from CI): when
``NBEXEC_AZUREML_TEST_CLIENT=module:factory`` is set, :func:`make_client` calls
``factory(options)`` instead of :func:`connect`. Setting a variable of a process
already allows running code in it (``PYTHONPATH``, ``PYTHONSTARTUP``), so the hook
grants nothing new; nbexec never sets it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from nbexec.errors import EnvironmentCheckError
from nbexec.schedulers.azureml.job import require_azure_ai_ml

TEST_CLIENT_VAR = "NBEXEC_AZUREML_TEST_CLIENT"
ARM_SCOPE = "https://management.azure.com/.default"
_WORKSPACE_ENV = (("subscription_id", "AZURE_SUBSCRIPTION_ID"), ("resource_group", "AZURE_RESOURCE_GROUP"),
                  ("workspace", "AZUREML_WORKSPACE_NAME"))


def workspace_of(options: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Subscription, resource group and workspace from the config, else the environment.

    Raises:
        EnvironmentCheckError: naming each missing value and where to give it.
    """
    found = {key: options.get(key) or env.get(var) for key, var in _WORKSPACE_ENV}
    missing = [f"launch.azureml.{key} (or ${var})" for key, var in _WORKSPACE_ENV if not found[key]]
    if missing:
        raise EnvironmentCheckError([(
            f"AzureML submission needs the workspace; missing: {', '.join(missing)}. "
            "Or use --dry-run to write the job YAML and submit it with `az ml job create -f`"
        )])
    return {k: str(v) for k, v in found.items()}


def connect(options: Mapping[str, Any], env: Mapping[str, str] | None = None, credential: Any = None) -> Any:
    """An authenticated ``MLClient`` for the configured workspace.

    Raises:
        EnvironmentCheckError: azure-ai-ml, the workspace, the compute or credentials missing.
    """
    require_azure_ai_ml()
    env = os.environ if env is None else env
    workspace = workspace_of(options, env)
    if not options.get("compute"):
        raise EnvironmentCheckError(["AzureML submission needs launch.azureml.compute: the compute cluster's name"])
    from azure.ai.ml import MLClient

    if credential is None:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        try:
            credential.get_token(ARM_SCOPE)
        except ClientAuthenticationError as err:
            raise EnvironmentCheckError([(
                "no Azure credentials found: run `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET (a service principal), or run where a managed identity is available"
            )]) from err
    return MLClient(credential, workspace["subscription_id"], workspace["resource_group"], workspace["workspace"])


def make_client(options: dict[str, Any]) -> Any:
    """The ``MLClient`` (the test hook's stand-in only when ``NBEXEC_AZUREML_TEST_CLIENT`` is set)."""
    spec = os.environ.get(TEST_CLIENT_VAR)
    if spec:
        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr)(options)
    return connect(options)


__all__ = ["ARM_SCOPE", "TEST_CLIENT_VAR", "connect", "make_client", "workspace_of"]
