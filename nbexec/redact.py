"""Keep secrets out of everything nbexec writes: logs, saved configs, command.txt, MLflow.

A name is secret when it contains TOKEN, KEY, SECRET, PASSWORD, PASSWD or
CREDENTIAL (any case), e.g. ``HF_TOKEN``, ``training.api_key``,
``AZURE_CLIENT_SECRET``. Values under such names are replaced by ``REDACTED``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
# "TOKEN" but not "tokenizer" / "max_tokens": those name settings, not secrets.
_SECRET_RE = re.compile(r"TOKEN(?!IZ|S(?![A-Z]))|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Names that match the pattern but carry no secret.
_NOT_SECRET = frozenset({"KEYBOARD", "MONKEY", "KEY_HASH"})


def is_secret_name(name: str) -> bool:
    """True when a variable or config key name suggests a secret value."""
    upper = name.upper()
    if upper in _NOT_SECRET or upper.endswith("_KEY_HASH"):
        return False
    return bool(_SECRET_RE.search(name))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with secret-named values replaced."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}


def split_secrets(data: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split nested config data into (redacted copy, {dotted.path: secret value})."""
    clean: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if is_secret_name(str(key)) and value is not None and not isinstance(value, Mapping):
            clean[key] = REDACTED
            secrets[path] = value
        elif isinstance(value, Mapping):
            clean[key], inner = split_secrets(value, prefix=f"{path}.")
            secrets.update(inner)
        else:
            clean[key] = value
    return clean, secrets


def merge_secrets(data: dict[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Put secret values back into a redacted config (in place; returns it).

    A key may itself contain dots (``hub.v2``): at each level the longest run
    of path parts that names an existing key wins.
    """
    for path, value in secrets.items():
        node = data
        parts = path.split(".")
        i = 0
        while i < len(parts) - 1:
            for j in range(len(parts) - i, 0, -1):
                key = ".".join(parts[i : i + j])
                if key in node and (i + j == len(parts) or isinstance(node[key], dict)):
                    break
            else:
                key, j = parts[i], 1
            if i + j == len(parts):
                break
            node = node.setdefault(key, {})
            i += j
        else:
            key = parts[-1]
        node[key] = value
    return data
