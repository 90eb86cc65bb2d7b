"""The DDP training loop of the reference token-classification trainer.

Config: the ``model``/``training``/``data`` sections of ``ctx.config`` (the
file nbexec wrote, ``$NBEXEC_CONFIG``), or of ``--config PATH``; defaults
from :mod:`.schema` fill the rest, so a bare run trains the demo.

Reports through the child API (rank 0 only): ``progress`` and ``metrics``
(``loss``, ``learning_rate``) every ``training.log_every`` steps; at each
epoch end ``metrics`` (``epoch``, ``train_loss``, ``val_loss``,
``val_token_accuracy``, ``val_precision``, ``val_recall``, ``val_f1``, summed
over all ranks), a checkpoint and a ``checkpoint`` event.

Resume (``--resume-from DIR`` or ``$NBEXEC_RESUME_FROM``) continues with the
epoch after the one saved; the random state of every epoch derives from
(seed, epoch, rank) only, so 1 epoch + resume to 2 gives the weights of an
uninterrupted 2-epoch run. ``training.max_steps`` stops a run mid-epoch; a
resume from that checkpoint starts at the next epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

import nbexec.contract as contract
from nbexec.child import (
    RunContext,
    create_run_context,
    destroy_process_group_if_needed,
    init_process_group_if_needed,
)
from nbexec.errors import ConfigError
from nbexec.redact import split_secrets
from nbexec.trainers.token_classification import schema
from nbexec.trainers.token_classification.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from nbexec.trainers.token_classification.data import (
    IGNORE_INDEX,
    DatasetMeta,
    ensure_dataset,
    load_meta,
    load_split,
)
from nbexec.trainers.token_classification.metrics import evaluate_sums, summarize
from nbexec.trainers.token_classification.model import build_model

__all__ = ["main", "resolve_config", "train"]

TRAINER_NAME = "nbexec.trainers.token_classification"
DEFAULT_CHECKPOINT_DIR = Path(contract.CHECKPOINT_DIR)
# Model fields whose change makes saved weights unusable.
_SHAPE_FIELDS = ("backbone", "d_model", "layers", "heads", "ff_dim")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nbexec.trainers.token_classification``.

    Raises:
        Whatever stopped training; the process then exits non-zero.
    """
    args = _parse_args(argv)
    ctx = create_run_context()
    # Config errors surface before any rendezvous, so they fail fast on every rank.
    cfg = resolve_config(ctx.config, args.config)
    init_process_group_if_needed(ctx)
    try:
        train(ctx, cfg, resume_from=args.resume_from or ctx.resume_from)
    except BaseException:
        # No barrier: the peers may be gone. Tear down so exit is clean.
        destroy_process_group_if_needed(barrier=False)
        raise
    destroy_process_group_if_needed()
    return 0


def resolve_config(
    run_config: Mapping[str, Any], config_path: Path | None = None
) -> dict[str, dict[str, Any]]:
    """The trainer's three sections, validated, with defaults filled.

    Args:
        run_config: nbexec's resolved config (``ctx.config``), {} outside nbexec.
        config_path: a YAML file that replaces ``run_config`` (``--config``).

    Raises:
        ConfigError: a bad value, or a config file that is not a mapping.
    """
    source: Any = run_config
    if config_path is not None:
        import yaml

        source = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    if not isinstance(source, Mapping):
        raise ConfigError(
            f"config {str(config_path)!r} must be a mapping with model/training/data sections",
            value=source,
        )
    return schema.resolved(source.get("model"), source.get("training"), source.get("data"))


def train(
    ctx: RunContext,
    cfg: Mapping[str, Mapping[str, Any]],
    *,
    resume_from: str | Path | None = None,
) -> dict[str, float]:
    """Train, validate and checkpoint; call with the process group already set up.

    Args:
        ctx: this process's place in the job and its reporter.
        cfg: resolved sections (see :func:`resolve_config`).
        resume_from: a checkpoint directory to continue from.

    Returns:
        The metrics of the last epoch run here ({} if nothing was left to run).
    """
    t_cfg, d_cfg = cfg["training"], cfg["data"]
    device = torch.device(ctx.device)
    seed = t_cfg["seed"]
    started = time.perf_counter()

    ctx.report_phase("starting", "loading the data")
    data_dir, meta = _prepare_data(ctx, d_cfg)
    train_set = load_split(data_dir, "train", meta, d_cfg["seq_len"])
    val_set = load_split(data_dir, "val", meta, d_cfg["seq_len"])
    # What was actually used (data.path may have been the default): the run's summary and lineage say it.
    ctx.report_data(Path(data_dir).resolve(), train_sentences=len(train_set), val_sentences=len(val_set))
    ctx.report_phase("starting", "building the model")

    torch.manual_seed(seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = build_model(
        cfg["model"], vocab_size=len(meta.vocab), num_labels=len(meta.labels),
        max_len=d_cfg["seq_len"],
    ).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t_cfg["learning_rate"], weight_decay=t_cfg["weight_decay"]
    )
    start_epoch, global_step, history = 1, 0, []
    if resume_from:
        state = _restore(Path(resume_from), model, optimizer, cfg, meta, device)
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        history = list(state.get("history", []))
        _say(ctx, f"resumed from {resume_from}: epoch {state['epoch']} done, step {global_step}")
        ctx.report_message(f"resumed from {resume_from} at epoch {start_epoch}")

    ddp: nn.Module = model
    if ctx.is_distributed:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # DistributedSampler with explicit replicas/rank needs no process group, so one
    # process and many share one seeded, epoch-dependent shuffle.
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    pin = device.type == "cuda"
    # In-memory tensors: worker processes would cost more than they save.
    train_loader = DataLoader(
        train_set, batch_size=t_cfg["batch_size"], sampler=sampler, pin_memory=pin
    )
    # Validation shards without the sampler's padding, so the summed counts are exact.
    val_loader = DataLoader(
        Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size)),
        batch_size=max(64, t_cfg["batch_size"]), pin_memory=pin,
    )
    # One line from every rank (the rest comes from rank 0): where it runs, in how big a world.
    print(f"rank {ctx.rank} of world size {ctx.world_size} (local rank {ctx.local_rank}) on {device}", flush=True)
    steps_per_epoch = len(train_loader)
    total_steps = t_cfg["epochs"] * steps_per_epoch
    if t_cfg["max_steps"] is not None:
        total_steps = min(total_steps, t_cfg["max_steps"])
    _say(
        ctx,
        f"training {cfg['model']['backbone']} on {len(train_set)} sentences "
        f"({len(val_set)} val) from {data_dir}: {ctx.world_size} process(es) on "
        f"{device.type}, batch {t_cfg['batch_size']}/process, {steps_per_epoch} steps/epoch, "
        f"epochs {start_epoch}..{t_cfg['epochs']}, {_count(model)} parameters",
    )
    if start_epoch > t_cfg["epochs"] or global_step >= total_steps:
        _say(ctx, f"nothing to do: the checkpoint already covers {global_step} steps")
        ctx.report_progress(global_step, total_steps, epoch=start_epoch - 1)
        return {}

    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    checkpoint_dir = Path(ctx.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    metrics: dict[str, float] = {}
    ctx.report_progress(global_step, total_steps, epoch=start_epoch)  # training: the steps start now
    for epoch in range(start_epoch, t_cfg["epochs"] + 1):
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(seed, epoch, ctx.rank))  # dropout: resumable, per rank
        model.train()
        # Device-side sums: no host sync per step on GPUs.
        window = torch.zeros(2, dtype=torch.float64, device=device)
        epoch_sum = torch.zeros(2, dtype=torch.float64, device=device)
        for input_ids, labels in train_loader:
            input_ids = input_ids.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = ddp(input_ids)
            loss = loss_fn(logits.flatten(0, 1), labels.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t_cfg["grad_clip"] is not None:
                nn.utils.clip_grad_norm_(model.parameters(), t_cfg["grad_clip"])
            optimizer.step()
            global_step += 1
            window += torch.stack([loss.detach().double(), torch.ones((), device=device)])
            if global_step % t_cfg["log_every"] == 0:
                loss_sum, steps = _all_reduce(ctx, window).tolist()
                epoch_sum += window
                window.zero_()
                lr = optimizer.param_groups[0]["lr"]
                ctx.log_metrics({"loss": loss_sum / steps, "learning_rate": lr}, step=global_step)
                ctx.report_progress(global_step, total_steps, epoch=epoch)
                _say(
                    ctx,
                    f"epoch {epoch}/{t_cfg['epochs']} step {global_step}/{total_steps} "
                    f"loss {loss_sum / steps:.4f}",
                )
            if global_step >= total_steps:
                break
        epoch_sum += window
        train_loss_sum, train_steps = _all_reduce(ctx, epoch_sum).tolist()
        last = global_step >= total_steps or epoch == t_cfg["epochs"]
        # After the last step the job is finishing; between epochs it is still training.
        ctx.report_phase("finishing" if last else "training", f"validating epoch {epoch}")

        val = summarize(_all_reduce(ctx, evaluate_sums(model, val_loader, meta.labels, device)))
        metrics = {"epoch": float(epoch), "train_loss": train_loss_sum / max(train_steps, 1), **val}
        ctx.log_metrics(metrics, step=global_step)
        ctx.report_progress(global_step, total_steps, epoch=epoch)
        seconds = time.perf_counter() - epoch_started
        _say(
            ctx,
            f"epoch {epoch}/{t_cfg['epochs']} done in {seconds:.1f}s: "
            f"train_loss {metrics['train_loss']:.4f} val_loss {val['val_loss']:.4f} "
            f"val_token_accuracy {val['val_token_accuracy']:.4f} val_f1 {val['val_f1']:.4f}",
        )
        history.append({"epoch": epoch, "global_step": global_step, "metrics": metrics})
        if ctx.is_main:
            ctx.report_phase("finishing" if last else "training", "saving the checkpoint")
            trainer_state = {
                "trainer": TRAINER_NAME,
                "epoch": epoch,
                "epoch_complete": global_step % steps_per_epoch == 0,
                "global_step": global_step,
                "seed": seed,
                "world_size": ctx.world_size,
                # secrets (training.api_key, data.token...) stay out of checkpoints and their backups
                "config": split_secrets({k: dict(v) for k, v in cfg.items()})[0],
                "metrics": metrics,
                "history": history,
                "dataset": {"vocab": list(meta.vocab), "labels": list(meta.labels),
                            "seq_len": d_cfg["seq_len"]},
                "time": time.time(),
            }
            save_checkpoint(checkpoint_dir, model.state_dict(), optimizer.state_dict(),
                            trainer_state)
            ctx.report_checkpoint(checkpoint_dir, epoch=epoch, step=global_step)
            _say(ctx, f"checkpoint saved to {checkpoint_dir}")
        _barrier(ctx)  # nobody reads or outruns a checkpoint that is still being written
        if global_step >= total_steps:
            break
    _say(ctx, f"training finished in {time.perf_counter() - started:.1f}s at step {global_step}")
    return metrics


def _prepare_data(ctx: RunContext, d_cfg: Mapping[str, Any]) -> tuple[Path, DatasetMeta]:
    # One generator per node (local rank 0); the rest wait, then only check it.
    # Generation is atomic anyway, this just saves the others the work.
    if ctx.local_rank == 0:
        ensure_dataset(d_cfg)
    _barrier(ctx)
    data_dir = ensure_dataset(d_cfg)
    return data_dir, load_meta(data_dir)


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Mapping[str, Any]],
    meta: DatasetMeta,
    device: torch.device,
) -> dict[str, Any]:
    model_state, optimizer_state, state = load_checkpoint(path, map_location=device)
    saved_model = state.get("config", {}).get("model", {})
    changed = [k for k in _SHAPE_FIELDS if saved_model.get(k) != cfg["model"][k]]
    if changed:
        detail = ", ".join(f"{k}: {saved_model.get(k)!r} -> {cfg['model'][k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume from {path}: the model changed ({detail})")
    dataset = state.get("dataset", {})
    if dataset.get("vocab") != list(meta.vocab) or dataset.get("labels") != list(meta.labels):
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with another vocabulary or label set "
            f"than the dataset at {cfg['data']['path']}"
        )
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    # The saved state carries the old hyperparameters; the config asked for now wins.
    for group in optimizer.param_groups:
        group["lr"] = cfg["training"]["learning_rate"]
        group["weight_decay"] = cfg["training"]["weight_decay"]
    return state


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    digest = hashlib.sha256(f"{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _all_reduce(ctx: RunContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy on the CPU); NCCL needs the tensor on this rank's GPU."""
    if not ctx.is_distributed:
        return tensor.detach().cpu().clone()
    work = tensor.detach().to(ctx.device).clone()
    dist.all_reduce(work)
    return work.cpu()


def _barrier(ctx: RunContext) -> None:
    if not ctx.is_distributed:
        return
    if ctx.backend == "nccl":
        # Without device_ids NCCL guesses the GPU and warns.
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def _say(ctx: RunContext, text: str) -> None:
    if ctx.is_main:
        print(text, flush=True)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nbexec.trainers.token_classification",
        description="Train the reference token-classification model (DDP under torchrun).",
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with model/training/data sections (replaces $NBEXEC_CONFIG)")
    parser.add_argument("--resume-from", type=Path, default=None,
                        help="checkpoint directory to continue from (or $NBEXEC_RESUME_FROM)")
    return parser.parse_args(argv)
