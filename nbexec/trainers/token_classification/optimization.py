"""The optimizer and the learning-rate schedule, as a Hugging Face fine-tune has them.

- AdamW; weight decay on weight matrices and embeddings only, not on biases
  and norm weights (one-dimensional parameters).
- The learning rate of optimizer step ``k`` (0-based) is ``learning_rate *
  lr_factor(k, ...)``: linear warmup from 0, then flat (``constant``) or a
  linear decay to 0 at the last step (``linear``), the schedule of
  ``transformers.get_linear_schedule_with_warmup``. It depends on the step
  alone, so a resumed run continues the same schedule without saving one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "lr_factor", "set_learning_rate", "warmup_steps"]


def build_optimizer(model: nn.Module, t_cfg: Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in two groups: decayed and not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": t_cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t_cfg["learning_rate"])


def warmup_steps(t_cfg: Mapping[str, Any], total_steps: int) -> int:
    """``training.warmup_steps`` when set, else ``warmup_ratio`` of the run's steps (rounded up)."""
    if t_cfg.get("warmup_steps") is not None:
        return int(t_cfg["warmup_steps"])
    return math.ceil(float(t_cfg.get("warmup_ratio") or 0.0) * total_steps)


def lr_factor(step: int, *, total_steps: int, warmup: int, schedule: str) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
