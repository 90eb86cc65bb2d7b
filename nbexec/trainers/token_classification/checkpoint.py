"""Checkpoint files: written atomically, read back with a consistency check.

Layout of a checkpoint directory::

    model.pt            state_dict of the unwrapped model (no DDP ``module.`` prefix)
    optimizer.pt        AdamW state_dict
    trainer_state.json  epoch, global_step, seed, config, metrics, history,
                        dataset (vocab, labels), files (sha256 + size of the .pt files)

Each file is written to a temporary name and ``os.replace``-d into place, and
``trainer_state.json`` goes last, so a crash leaves the previous state file.
Its recorded hashes tell a reader whether the ``.pt`` files beside it belong
to it (a crash between the writes would leave newer weights behind). Reading
the state file (and checking a resume target before launch, without torch)
is :mod:`.state`'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import torch

from nbexec.hashing import file_sha256
from nbexec.trainers.token_classification.state import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    CheckpointError,
    read_trainer_state,
)

__all__ = [
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "CheckpointError",
    "load_checkpoint",
    "read_trainer_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1


def save_checkpoint(
    directory: str | os.PathLike[str],
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    trainer_state: Mapping[str, Any],
) -> Path:
    """Write the three checkpoint files into ``directory`` (created if needed).

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, obj in ((MODEL_FILE, model_state), (OPTIMIZER_FILE, optimizer_state)):
        files[name] = _write_atomic(directory / name, partial(torch.save, obj))  # torch.save(obj, fh)
    state = {"format_version": FORMAT_VERSION, **trainer_state, "files": files}
    text = json.dumps(state, indent=1, sort_keys=True, default=float).encode() + b"\n"
    _write_atomic(directory / STATE_FILE, lambda fh: fh.write(text))
    return directory


def load_checkpoint(
    directory: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read ``(model_state, optimizer_state, trainer_state)`` after checking the hashes.

    Raises:
        CheckpointError: a file is missing or was not written with this state.
    """
    directory = Path(directory)
    state = read_trainer_state(directory)
    loaded = []
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        path = directory / name
        expected = state.get("files", {}).get(name, {}).get("sha256")
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(directory)!r} has no {name}")
        if expected is not None and file_sha256(path) != expected:
            raise CheckpointError(
                f"{path} does not match {STATE_FILE} (a save was interrupted?); "
                "resume from an intact checkpoint or a backup"
            )
        loaded.append(torch.load(path, map_location=map_location, weights_only=True))
    return loaded[0], loaded[1], state


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> dict[str, Any]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # replace must not publish a file that is not on disk yet
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide checkpoints from backup tools/users
        info = {"sha256": file_sha256(tmp), "bytes": os.path.getsize(tmp)}
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info

