"""sha256 of files, of file listings and of JSON-able data: the one place nbexec hashes.

Every hash made here is persisted somewhere (config hashes in MLflow tags and
run dirs, study/trial keys in Optuna studies, file hashes in backup manifests,
checkpoint state files, lineage records and the data-fingerprint cache), so
the rules below must never change: a changed rule makes every stored value
stale. ``tests/core/test_hashing.py`` pins known values.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

CHUNK = 1 << 20  # 1 MiB reads: few syscalls, and hashing, not reading, is the cost


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (64 hex) of a file's bytes, read in chunks (memory stays flat for any size).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def listing_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 (64 hex) of ``(name, file sha256)`` pairs: the lines ``<name>\\0<sha256>\\n``.

    The pairs are hashed in the order given; each caller keeps its own order
    (a data fingerprint sorts by path components, a checkpoint by the name
    string: for ``a/b`` and ``a.c`` the two orders differ, and both are stored).
    """
    digest = hashlib.sha256()
    for name, sha in entries:
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()


def canonical_json(payload: Any, *, lenient: bool = False) -> str:
    """``payload`` as canonical JSON: sorted keys, no whitespace, ASCII only.

    Args:
        payload: JSON-able data; key order never matters.
        lenient: the config hash's rule, kept so stored config hashes do not
            change: values JSON cannot hold are written as ``str(value)``, and
            NaN/Infinity are written as JSON5-style ``NaN``/``Infinity``. Strict
            (the default, the HPO keys' rule) refuses both.

    Raises:
        TypeError: strict, and a value is not JSON-able.
        ValueError: strict, and a float is NaN or infinite.
    """
    if lenient:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_sha256(payload: Any, *, lenient: bool = False) -> str:
    """sha256 (64 hex) of :func:`canonical_json` ``(payload, lenient=lenient)``.

    The same in every process and for any key order. Raises as :func:`canonical_json`.
    """
    return hashlib.sha256(canonical_json(payload, lenient=lenient).encode()).hexdigest()


__all__ = ["CHUNK", "canonical_json", "canonical_sha256", "file_sha256", "listing_sha256"]
