"""Keep secrets out of everything nbexec writes: logs, saved configs, command.txt, MLflow.

A name is secret when it contains TOKEN, KEY, SECRET, PASSWORD, PASSWD or
CREDENTIAL (any case), e.g. ``HF_TOKEN``, ``training.api_key``,
``AZURE_CLIENT_SECRET``. Values under such names are replaced by ``REDACTED``.

Names decide what is secret; :class:`Scrubber` then finds those *values*
wherever they turn up in free text (a traceback that prints a token, a log
line), and :func:`redact_argv` hides the values of secret-named options.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

REDACTED = "***REDACTED***"
# "TOKEN" but not "tokenizer" / "max_tokens" / "subtoken_labels": those name settings, not secrets.
_SECRET_RE = re.compile(r"(?<!SUB)TOKEN(?!IZ|S(?![A-Z]))|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
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


# Shorter values are not scrubbed: replacing every "1234" in a log would ruin
# it, and real credentials are longer.
MIN_SECRET_LENGTH = 6


class Scrubber:
    """Replaces known secret values in text and files."""

    def __init__(self, values: Iterable[object] = ()) -> None:
        found = {str(v) for v in values if v is not None and len(str(v)) >= MIN_SECRET_LENGTH}
        # longest first: a secret containing another is replaced whole
        self.values = sorted(found, key=len, reverse=True)
        self._bytes = [v.encode() for v in self.values]

    @classmethod
    def from_sources(
        cls,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        argv: Iterable[str] = (),
    ) -> Scrubber:
        """Secrets from a config dict (secret-named keys), an env (secret-named
        variables) and an argv (values of secret-named options).

        ``env`` defaults to ``os.environ``: the job inherits it, so its secrets
        may turn up in the job's logs.
        """
        values: list[object] = []
        if config is not None:
            values.extend(split_secrets(config)[1].values())
        env = os.environ if env is None else env
        values.extend(v for k, v in env.items() if is_secret_name(k))
        values.extend(secret for _, secret in _scan_argv(argv) if secret is not None)
        return cls(values)

    def merged(self, other: Scrubber) -> Scrubber:
        return Scrubber([*self.values, *other.values])

    def text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def raw(self, data: bytes) -> bytes:
        """``data`` with secret values replaced (for bytes on their way to a file)."""
        if self._bytes:
            replacement = REDACTED.encode()
            for value in self._bytes:
                if value in data:
                    data = data.replace(value, replacement)
        return data

    def __bool__(self) -> bool:
        return bool(self.values)

    def copy_file(self, src: Path, dst: Path) -> None:
        """Copy ``src`` to ``dst`` with secrets replaced (line by line: logs may be large)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not self._bytes:
            shutil.copyfile(src, dst)
            return
        replacement = REDACTED.encode()
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for line in fin:
                for value in self._bytes:
                    if value in line:
                        line = line.replace(value, replacement)
                fout.write(line)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """An argv with secret option values replaced.

    Covers ``--hf-token VALUE``, ``--api_key=VALUE`` and ``HF_TOKEN=VALUE``.
    """
    out = []
    for arg, secret in _scan_argv(argv):
        if secret is None:
            out.append(arg)
        elif arg == secret:  # the value after --hf-token
            out.append(REDACTED)
        else:  # --hf-token=VALUE, HF_TOKEN=VALUE
            out.append(f"{arg.partition('=')[0]}={REDACTED}")
    return out


def _scan_argv(argv: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Each argument with the secret value it carries, if any."""
    hide_next = False
    for arg in map(str, argv):
        name, sep, value = arg.partition("=")
        if hide_next:
            hide_next = False
            yield arg, arg
        elif sep and value and is_secret_name(name.lstrip("-")):
            yield arg, value
        else:
            hide_next = arg.startswith("-") and not sep and is_secret_name(arg.lstrip("-"))
            yield arg, None
