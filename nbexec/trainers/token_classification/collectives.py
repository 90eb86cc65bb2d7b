"""What the ranks of a run do together: sums, barriers, and "each node's first rank goes first"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nbexec.child import RunContext
from nbexec.errors import ConfigError

__all__ = ["all_reduce", "barrier", "node_first"]

T = TypeVar("T")


def all_reduce(ctx: RunContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy on the CPU); NCCL needs the tensor on this rank's GPU."""
    if not ctx.is_distributed:
        return tensor.detach().cpu().clone()
    work = tensor.detach().to(ctx.device).clone()
    dist.all_reduce(work)
    return work.cpu()


def barrier(ctx: RunContext) -> None:
    if not ctx.is_distributed:
        return
    if ctx.backend == "nccl":
        # Without device_ids NCCL guesses the GPU and warns.
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def node_first(ctx: RunContext, work: Callable[[], T]) -> T:
    """Run ``work`` on each node's local rank 0, then on the node's other ranks.

    For what one process per node should do while the others wait: generate
    the synthetic dataset, download a model into the node's cache (the others
    then read it from there). When ``work`` raises an nbexec error (a config
    or environment problem) on a node's first rank, every rank raises the same
    error instead of waiting for it: the run ends with that one error, and no
    rank dies of a lost peer in a barrier.
    """
    if not ctx.is_distributed:
        return work()
    result: Any = None
    own: ConfigError | None = None
    if ctx.local_rank == 0:
        try:
            result = work()
        except ConfigError as err:
            own = err
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, _describe(own))
    failed = next(((rank, d) for rank, d in enumerate(gathered) if d is not None), None)
    if failed is not None:
        if own is not None:
            raise own
        raise _rebuild(*failed)
    if ctx.local_rank != 0:
        result = work()
    return result


def _describe(err: ConfigError | None) -> dict[str, Any] | None:
    if err is None:
        return None
    return {"message": str(err), "field": err.field, "value": repr(err.value)}


def _rebuild(rank: int, described: dict[str, Any]) -> ConfigError:
    err = ConfigError(described["message"], field=described["field"], value=described["value"])
    setattr(err, "copied_from_rank", rank)  # the rank that said it first (see train._said_once)
    return err
