"""Keep known secret *values* out of free text sent to MLflow (tags, notes, uploaded files).

:mod:`nbexec.redact` decides what is secret by name; this module collects the
values found under those names (config keys, environment variables) and
replaces them wherever they turn up in text: a traceback that prints a token,
a log line, an argument such as ``--hf-token=...``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nbexec.redact import REDACTED, is_secret_name, split_secrets

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
