"""The child API: what a training script calls inside torchrun workers.

    from nbexec.child import create_run_context, init_process_group_if_needed

    ctx = create_run_context()
    init_process_group_if_needed(ctx)
    cfg = ctx.config                       # resolved model/training/data sections
    ctx.report_progress(step, total, epoch=epoch)
    ctx.log_metrics({"loss": loss}, step=step)

Everything degrades: outside torchrun it is a one-process run on the best
device, and outside nbexec (no run dir) reporting is a no-op. Importing this
module does not import torch; the functions that need it import it lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec._lazy import lazy_exports

# Lazy, so that the worker bootstrap (``-m nbexec.child.bootstrap``, in every
# rank before the training script starts) does not pay for this package's API.
_EXPORTS: dict[str, str] = {
    "RunContext": "nbexec.child.context",
    "collective_timeout": "nbexec.child.context",
    "create_run_context": "nbexec.child.context",
    "destroy_process_group_if_needed": "nbexec.child.context",
    "init_process_group_if_needed": "nbexec.child.context",
    "load_run_config": "nbexec.child.context",
}

__all__ = [
    "RunContext",
    "collective_timeout",
    "create_run_context",
    "destroy_process_group_if_needed",
    "init_process_group_if_needed",
    "load_run_config",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from nbexec.child.context import (
        RunContext,
        collective_timeout,
        create_run_context,
        destroy_process_group_if_needed,
        init_process_group_if_needed,
        load_run_config,
    )
