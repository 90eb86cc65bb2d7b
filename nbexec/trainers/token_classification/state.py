"""A checkpoint's ``trainer_state.json``: read it, and check a resume target before launch.

No torch here: nbexec checks ``--resume`` before anything is spawned
(:func:`resume_problem`), and importing nbexec must stay light. The weights
and their hashes are checked by :func:`.checkpoint.load_checkpoint` in the ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbexec.contract as contract

__all__ = [
    "BEST_DIR", "MODEL_FILE", "OPTIMIZER_FILE", "PRETRAINED_MODEL_FILE", "STATE_FILE", "CheckpointError",
    "read_trainer_state", "resume_problem",
]

MODEL_FILE = "model.pt"  # tiny-encoder's weights
PRETRAINED_MODEL_FILE = "model.safetensors"  # a Hugging Face backbone's (save_pretrained)
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
BEST_DIR = "best"  # the best epoch by training.best_metric, beside the latest state
_FIX = "resume from an intact checkpoint directory (<run dir>/checkpoint), or restore one from a backup (nbexec restore)"


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing files or its files do not belong together."""


def read_trainer_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint directory.

    Raises:
        CheckpointError: the file is missing, not JSON, or not a JSON object; the
            message names the file and what to do.
    """
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        inner = directory / contract.CHECKPOINT_DIR / STATE_FILE
        hint = (f"; did you mean the run's checkpoint directory {inner.parent}?" if inner.is_file()
                else f"; {_FIX}")
        raise CheckpointError(
            f"{str(directory)!r} is not a checkpoint of the built-in trainer ({path} is missing){hint}"
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): the checkpoint is "
            f"damaged (an interrupted copy or save?); {_FIX}"
        ) from err
    except (UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{path} cannot be read as text ({err}); {_FIX}") from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(state).__name__}, not a JSON object (epoch, global_step, files ...); {_FIX}"
        )
    return state


def resume_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why the built-in trainer cannot resume from ``directory`` (None: it looks resumable).

    Reads ``trainer_state.json`` and checks that the weight files it lists are
    there; hashing the weights is left to the ranks (it reads every byte).
    """
    directory = Path(directory)
    try:
        state = read_trainer_state(directory)
    except CheckpointError as err:
        return f"resume checkpoint: {err}"
    listed = state.get("files")
    names = list(listed) if isinstance(listed, dict) and listed else [MODEL_FILE, OPTIMIZER_FILE]
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        return f"resume checkpoint {directory} has no {' or '.join(missing)}; {_FIX}"
    return None
