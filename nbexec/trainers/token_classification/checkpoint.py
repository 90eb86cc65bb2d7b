"""Checkpoint files: written atomically, read back with a consistency check.

Layout of a checkpoint directory::

    model.pt            tiny-encoder: state_dict of the unwrapped model (no DDP ``module.`` prefix)
    config.json         a Hugging Face backbone: the model in save_pretrained form,
    model.safetensors     loadable with AutoModelForTokenClassification.from_pretrained
    tokenizer*.json       (and AutoTokenizer.from_pretrained)
    optimizer.pt        AdamW state_dict
    trainer_state.json  epoch, global_step, seed, config, metrics, history, dataset
                        (labels, vocab), best, weights (which file holds them),
                        files (sha256 + size of the weights and optimizer files)
    best/               the best epoch by training.best_metric: its weights in the same
                        form (model.pt, or save_pretrained files) and best.json

Each file is written to a temporary name and ``os.replace``-d into place, and
``trainer_state.json`` goes last, so a crash leaves the previous state file.
Its recorded hashes tell a reader whether the weight files beside it belong
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
from torch import nn

from nbexec.hashing import file_sha256
from nbexec.trainers.token_classification.state import (
    BEST_DIR,
    MODEL_FILE,
    OPTIMIZER_FILE,
    PRETRAINED_MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    read_trainer_state,
)

__all__ = [
    "BEST_DIR",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "CheckpointError",
    "load_checkpoint",
    "read_trainer_state",
    "save_best",
    "save_checkpoint",
]

FORMAT_VERSION = 1


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    optimizer_state: Mapping[str, Any],
    trainer_state: Mapping[str, Any],
    *,
    tokenizer: Any = None,
) -> Path:
    """Write the weights (see :func:`save_weights`), the optimizer and the state file into ``directory``.

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_weights(directory, model, tokenizer)
    files = {weights: _file_info(directory / weights)}
    files[OPTIMIZER_FILE] = _write_atomic(directory / OPTIMIZER_FILE, partial(torch.save, optimizer_state))
    _write_state(directory / STATE_FILE, {"format_version": FORMAT_VERSION, **trainer_state, "weights": weights,
                                           "files": files})
    return directory


def save_best(directory: str | os.PathLike[str], model: nn.Module, info: Mapping[str, Any], *,
              tokenizer: Any = None) -> Path:
    """Write the best epoch's weights and ``best.json`` (metric, value, epoch, step) into ``<directory>/best``."""
    best = Path(directory) / BEST_DIR
    best.mkdir(parents=True, exist_ok=True)
    weights = save_weights(best, model, tokenizer)
    _write_state(best / "best.json", {**info, "weights": weights, "files": {weights: _file_info(best / weights)}})
    return best


def save_weights(directory: Path, model: nn.Module, tokenizer: Any = None) -> str:
    """The model's weights into ``directory``: save_pretrained form for a Hugging Face model, else ``model.pt``.

    Returns:
        The name of the file that holds the weights.
    """
    if hasattr(model, "save_pretrained"):
        from nbexec.trainers.token_classification.hf import save_pretrained_files

        save_pretrained_files(directory, model, tokenizer)
        return PRETRAINED_MODEL_FILE
    _write_atomic(directory / MODEL_FILE, partial(torch.save, model.state_dict()))  # torch.save(obj, fh)
    return MODEL_FILE


def load_checkpoint(
    directory: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read ``(model_state, optimizer_state, trainer_state)`` after checking the hashes.

    Raises:
        CheckpointError: a file is missing or was not written with this state.
    """
    directory = Path(directory)
    state = read_trainer_state(directory)
    weights = state.get("weights", MODEL_FILE)
    loaded = []
    for name in (weights, OPTIMIZER_FILE):
        path = directory / name
        expected = state.get("files", {}).get(name, {}).get("sha256")
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(directory)!r} has no {name}")
        if expected is not None and file_sha256(path) != expected:
            raise CheckpointError(
                f"{path} does not match {STATE_FILE} (a save was interrupted?); "
                "resume from an intact checkpoint or a backup"
            )
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded.append(load_file(path, device=str(map_location)))
        else:
            loaded.append(torch.load(path, map_location=map_location, weights_only=True))
    return loaded[0], loaded[1], state


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    text = json.dumps(state, indent=1, sort_keys=True, default=float).encode() + b"\n"
    _write_atomic(path, lambda fh: fh.write(text))


def _file_info(path: Path) -> dict[str, Any]:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


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

