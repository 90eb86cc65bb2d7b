"""Mixed precision: which one a device gets, autocast around the forward pass, a loss scaler for fp16.

``training.mixed_precision``:

    auto   bf16 on a GPU that supports it, fp16 (with a loss scaler) on one that
           does not, full precision on CPU
    no     full precision everywhere
    bf16   bf16 autocast (a GPU without bf16 is refused; CPU autocast works too)
    fp16   fp16 autocast with a GradScaler; CUDA only

The weights, the optimizer and the loss stay in float32; only the forward pass
runs under autocast. :func:`choose_precision` takes the GPU's bf16 support as
an argument, so the choice is tested without a GPU; the GPU path itself is
checked by ``bench/hf_gpu_check.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nbexec.errors import ConfigError

__all__ = ["Precision", "choose_precision"]


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in.

    Attributes:
        name: ``fp32``, ``bf16`` or ``fp16``.
        device_type: ``cuda`` or ``cpu`` (what autocast is told).
    """

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def uses_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self) -> Any:
        """A ``torch.amp.GradScaler`` for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None


def choose_precision(
    asked: str, device: torch.device, *, bf16_supported: Callable[[], bool] | None = None
) -> Precision:
    """The precision for ``training.mixed_precision`` on ``device``.

    Args:
        asked: ``auto``, ``no``, ``bf16`` or ``fp16``.
        bf16_supported: whether the GPU has bf16 (default: ``torch.cuda.is_bf16_supported``).

    Raises:
        ConfigError: fp16 asked on a CPU, or bf16 on a GPU without it.
    """
    kind = device.type
    if asked == "no" or (asked == "auto" and kind != "cuda"):
        return Precision("fp32", kind)
    if kind != "cuda" and asked == "fp16":
        raise ConfigError(
            "training.mixed_precision = 'fp16' needs a CUDA GPU (its loss scaler is CUDA's); "
            "on CPU use 'bf16', or 'auto'/'no' for full precision",
            field="training.mixed_precision", value=asked,
        )
    if kind != "cuda":
        return Precision("bf16", kind)
    has_bf16 = (bf16_supported or torch.cuda.is_bf16_supported)()
    if asked == "bf16" and not has_bf16:
        raise ConfigError(
            "training.mixed_precision = 'bf16' is not supported by this GPU; use 'fp16' (with a loss scaler) "
            "or 'auto', which picks it",
            field="training.mixed_precision", value=asked,
        )
    if asked == "auto":
        return Precision("bf16" if has_bf16 else "fp16", kind)
    return Precision(asked, kind)
