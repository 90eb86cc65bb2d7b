"""RunContext and the functions of :mod:`nbexec.child` (exported from there)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.events import EventWriter

__all__ = [
    "RunContext",
    "collective_timeout",
    "create_run_context",
    "init_process_group_if_needed",
    "destroy_process_group_if_needed",
    "load_run_config",
]


@dataclass
class RunContext:
    """Where this process sits in the job, and how it reports back.

    Attributes:
        rank, local_rank, world_size, local_world_size: from torchrun's env.
        backend: ``"nccl"`` or ``"gloo"``.
        device: ``"cuda:<local_rank>"`` with NCCL, else ``"cpu"``.
        run_dir: the nbexec run directory, or None outside nbexec.
        checkpoint_dir: where to save checkpoints (``<run_dir>/checkpoint``).
        resume_from: a checkpoint directory to resume from, if asked.
        config: the resolved config (``model``/``training``/``data``...), {} if none.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    backend: str = "gloo"
    device: str = "cpu"
    run_dir: Path | None = None
    checkpoint_dir: Path | None = None
    resume_from: Path | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    _events: EventWriter | None = field(default=None, repr=False)
    _progress_only: bool = field(default=False, repr=False)  # a rank other than 0: progress events only
    _mlflow: Any = field(default=None, repr=False)  # MetricsLogger when rank 0 logs to MLflow

    @property
    def is_main(self) -> bool:
        """True on global rank 0: the rank that saves, logs and reports."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def report_progress(self, step: int, total: int | None = None, **fields: Any) -> None:
        """Report training progress (e.g. ``epoch=1``); shown as a progress bar."""
        self._emit("progress", step=step, total=total, **fields)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Report metric values; shown live, kept in ``events.jsonl``, sent to MLflow.

        MLflow gets them from the parent by default; with
        ``tracking.metrics_from: rank0`` this rank sends them itself, batched in
        a background thread (this call never waits for MLflow).
        """
        values = {k: float(v) for k, v in metrics.items()}
        self._emit("metrics", step=step, metrics=values)
        if self._mlflow is not None:
            self._mlflow.log(values, step=step)

    def close(self) -> None:
        """Flush pending MLflow metrics and close the events file (also done at exit)."""
        if self._mlflow is not None:
            self._mlflow.close()
        if self._events is not None:
            self._events.close()

    def report_checkpoint(self, path: str | os.PathLike[str], **fields: Any) -> None:
        """Tell the parent a checkpoint was written at ``path``."""
        self._emit("checkpoint", path=str(path), **fields)

    def report_message(self, text: str) -> None:
        self._emit("message", text=text)

    def report_phase(self, phase: str, detail: str | None = None) -> None:
        """Say what the job is doing when no step moves, shown in the notebook's view.

        Args:
            phase: ``"starting"`` (before the first step: loading data, building the model),
                ``"training"`` or ``"finishing"`` (after the last step: validating, saving
                the checkpoint). A step reported later moves ``starting`` to ``training``.
            detail: what exactly, e.g. ``"saving the checkpoint"``.
        """
        self._emit("phase", phase=phase, **({"detail": detail} if detail else {}))

    def report_data(self, path: str | os.PathLike[str], **fields: Any) -> None:
        """Tell the parent which data this run trained on (the run's summary and lineage show it).

        Args:
            path: the dataset's folder or file, as the trainer resolved it (also when it
                was a default, not given in the config).
            **fields: anything else worth recording (``"generated": True``, sizes...).
        """
        self._emit("data", path=str(path), **fields)

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None and (kind == "progress" or not self._progress_only):
            self._events.emit(kind, **fields)


def create_run_context(distributed_config: Mapping[str, Any] | None = None) -> RunContext:
    """Build the :class:`RunContext` from torchrun's and nbexec's environment.

    Args:
        distributed_config: optional overrides, e.g. ``{"backend": "gloo"}``.

    Returns:
        The context; only the main rank (or every rank when the parent asked for
        it) writes events. When the parent watches for stalls, every rank also
        reports its progress (it tells a rank that fell behind).
    """
    env = os.environ
    overrides = dict(distributed_config or {})
    rank = int(env.get("RANK", 0))
    local_rank = int(env.get("LOCAL_RANK", 0))
    world_size = int(env.get("WORLD_SIZE", 1))
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
    backend = overrides.get("backend") or env.get(contract.ENV_BACKEND) or _default_backend()
    device = f"cuda:{local_rank}" if backend == "nccl" else "cpu"

    run_dir = Path(env[contract.ENV_RUN_DIR]) if env.get(contract.ENV_RUN_DIR) else None
    checkpoint_dir = (
        Path(env[contract.ENV_CHECKPOINT_DIR])
        if env.get(contract.ENV_CHECKPOINT_DIR)
        else (run_dir / contract.CHECKPOINT_DIR if run_dir else None)
    )
    resume = env.get(contract.ENV_RESUME_FROM)
    events = None
    events_path = env.get(contract.ENV_EVENTS)
    all_events = rank == 0 or env.get(contract.ENV_EVENTS_ALL_RANKS) == "1"
    progress_only = not all_events and env.get(contract.ENV_PROGRESS_ALL_RANKS) == "1"
    if events_path and (all_events or progress_only):
        events = EventWriter(events_path, rank=rank)
    mlflow_logger = None
    if rank == 0 and env.get("MLFLOW_RUN_ID"):
        from nbexec.tracking.child_logger import MetricsLogger

        mlflow_logger = MetricsLogger.from_env()  # None unless the parent asked rank 0 to log
    return RunContext(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        backend=backend,
        device=device,
        run_dir=run_dir,
        checkpoint_dir=checkpoint_dir,
        resume_from=Path(resume) if resume else None,
        config=load_run_config(),
        _events=events,
        _progress_only=progress_only,
        _mlflow=mlflow_logger,
    )


def load_run_config() -> dict[str, Any]:
    """The resolved config the parent wrote (``$NBEXEC_CONFIG``), or {} outside nbexec.

    Secret values, redacted in the file, are restored from the environment.
    """
    path = os.environ.get(contract.ENV_CONFIG)
    if not path:
        return {}
    import json

    import yaml

    from nbexec.redact import merge_secrets

    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    # config.yaml on disk is redacted; the real secret values come by environment
    secrets = os.environ.get(contract.ENV_CONFIG_SECRETS)
    return merge_secrets(config, json.loads(secrets)) if secrets else config


def init_process_group_if_needed(ctx: RunContext) -> bool:
    """Initialise ``torch.distributed`` for a multi-process job; no-op for one process.

    NCCL: binds this process to ``cuda:<local_rank>`` first. Gloo on CPU otherwise.
    The group's timeout is ``launch.collective_timeout`` (``$NBEXEC_COLLECTIVE_TIMEOUT``)
    when set, else torch's default: a collective whose peers do not come within
    it fails instead of waiting (and nbexec names the rank that did not come).

    Returns:
        True when a process group was initialised by this call.
    """
    if ctx.world_size <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    ctx.report_phase("starting", f"rendezvous of {ctx.world_size} processes ({ctx.backend})")
    timeout = collective_timeout()
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if ctx.backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl", device_id=torch.device(ctx.device), **options)
    else:
        dist.init_process_group(ctx.backend, **options)
    return True


def collective_timeout() -> datetime.timedelta | None:
    """``$NBEXEC_COLLECTIVE_TIMEOUT`` (seconds) as a timedelta, or None when unset (torch's default).

    Raises:
        ValueError: the variable is not a positive number of seconds.
    """
    text = os.environ.get(contract.ENV_COLLECTIVE_TIMEOUT, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{contract.ENV_COLLECTIVE_TIMEOUT}={text!r} is not a positive number of seconds; "
                         "set launch.collective_timeout (or leave it unset for torch's default)")
    return datetime.timedelta(seconds=seconds)


def destroy_process_group_if_needed(barrier: bool = True, barrier_timeout_s: float = 60.0) -> None:
    """Tear the process group down at the end of training (no-op if none).

    With ``barrier`` (the default, for the success path: call it on every
    rank) ranks first wait for each other, so none tears its connections down
    while a peer is still using them — with gloo that can abort the peer
    ("terminate called without an active exception") after a good run. On
    gloo the wait is a monitored barrier: a peer that never comes costs
    ``barrier_timeout_s`` and an error, not a hang.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # DDP models hold the process group in reference cycles; collected
        # only at interpreter shutdown, gloo's threads die mid-finalisation
        # and the process aborts (SIGABRT) after a successful run.
        gc.collect()
        if barrier and dist.get_world_size() > 1:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=barrier_timeout_s))
            else:
                dist.barrier()
        dist.destroy_process_group()


def _default_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"
