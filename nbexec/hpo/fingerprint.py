"""A content fingerprint of a dataset (a file or a directory tree), cached by size and mtime.

The fingerprint is the sha256 of the sorted ``(relative path, file sha256)``
pairs: renaming or moving the dataset directory keeps it, changing any byte,
adding or removing a file changes it. Hashing a large dataset is slow, so each
file's hash is cached under its absolute path with its size and mtime
(nanoseconds); an unchanged file is not read again. The cache is a JSON file in
``$NBEXEC_CACHE_DIR`` (default ``~/.cache/nbexec``), written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.hashing import file_sha256, listing_sha256

ENV_CACHE_DIR = "NBEXEC_CACHE_DIR"
CACHE_FILE = "data-fingerprints.json"
_lock = threading.Lock()


@dataclass(frozen=True)
class DataFingerprint:
    """What :func:`data_fingerprint` found.

    Attributes:
        path: the dataset, absolute.
        sha256: the content fingerprint (64 hex), or None when ``path`` does not exist.
        files, bytes: how much was fingerprinted.
        hashed: files read this time (the rest came from the cache).
    """

    path: str
    sha256: str | None
    files: int = 0
    bytes: int = 0
    hashed: int = 0

    @property
    def exists(self) -> bool:
        return self.sha256 is not None


def default_cache_path() -> Path:
    """``$NBEXEC_CACHE_DIR/data-fingerprints.json`` (default dir ``~/.cache/nbexec``)."""
    root = os.environ.get(ENV_CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nbexec"
    )
    return Path(root) / CACHE_FILE


def data_fingerprint(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None) -> DataFingerprint:
    """Fingerprint the dataset at ``path`` (a file or a directory; hidden files are skipped).

    Args:
        path: the dataset.
        cache: the cache file (default :func:`default_cache_path`); ``os.devnull`` disables it.

    Returns:
        The :class:`DataFingerprint`; ``sha256`` is None when ``path`` does not exist.
    """
    root = Path(path).absolute()
    if not root.exists():
        return DataFingerprint(str(root), None)
    files = [root] if root.is_file() else sorted(_walk(root))
    cache_path = Path(cache) if cache is not None else default_cache_path()
    use_cache = str(cache_path) != os.devnull
    with _lock:
        entries = _load(cache_path) if use_cache else {}
        listing: list[tuple[str, str]] = []  # in ``files``' order (sorted as Paths): part of the stored value
        total = hashed = 0
        for file in files:
            st = file.stat()
            key = str(file)
            hit = entries.get(key)
            if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
                sha = hit["sha256"]
            else:
                sha = file_sha256(file)
                hashed += 1
                entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
            rel = file.name if file == root else file.relative_to(root).as_posix()
            listing.append((rel, sha))
            total += st.st_size
        if use_cache and hashed:
            _save(cache_path, entries)
    return DataFingerprint(str(root), listing_sha256(listing), files=len(files), bytes=total, hashed=hashed)


def _walk(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # temp dirs of writers, .git
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return out


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a corrupt one: rebuilt from the files
    return data if isinstance(data, dict) else {}


def _save(path: Path, entries: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the next call a re-hash
