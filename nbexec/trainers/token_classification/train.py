"""The DDP training loop of the reference token-classification trainer.

Config: the ``model``/``training``/``data`` sections of ``ctx.config`` (the
file nbexec wrote, ``$NBEXEC_CONFIG``), or of ``--config PATH``; defaults
from :mod:`.schema` fill the rest, so a bare run trains the demo.

The backbone is ``tiny-encoder`` (:mod:`.model`) or a Hugging Face model
(:mod:`.hf`); the data any format :mod:`.corpus` reads. An optimizer step
takes ``training.grad_accumulation_steps`` micro-batches of ``batch_size`` per
process; the learning rate follows :mod:`.optimization`'s schedule; the forward
pass runs in the precision :mod:`.precision` picks.

Reports through the child API (rank 0 only): ``progress`` and ``metrics``
(``loss``, ``learning_rate``) every ``training.log_every`` optimizer steps; at
each epoch end ``metrics`` (``epoch``, ``train_loss``, ``val_loss``,
``val_token_accuracy``, ``val_precision``, ``val_recall``, ``val_f1``, summed
over all ranks), a checkpoint (:mod:`.checkpoint`; ``checkpoint/best`` when the
epoch is the best by ``training.best_metric``) and a ``checkpoint`` event.

Resume (``--resume-from DIR`` or ``$NBEXEC_RESUME_FROM``) continues with the
epoch after the one saved; the random state of every epoch derives from
(seed, epoch, rank) only and the learning rate from the step, so 1 epoch +
resume to 2 gives the weights of an uninterrupted 2-epoch run when the
schedule does not depend on the run's length (``lr_scheduler: constant``); a
``linear`` decay plans over the epochs asked, so an interrupted run resumed
with the same config continues it exactly. ``training.max_steps`` stops a run
mid-epoch; a resume from that checkpoint starts at the next epoch.

A config or data problem (:class:`~nbexec.errors.ConfigError`) is found before
the ranks meet where it can be, and is said once, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

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
    BEST_DIR,
    CheckpointError,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from nbexec.trainers.token_classification.collectives import all_reduce, barrier, node_first
from nbexec.trainers.token_classification.corpus import Corpus, check_dataset, load_corpus, prepare_dataset
from nbexec.trainers.token_classification.encoding import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_subwords,
    encode_words,
    word_vocabulary,
)
from nbexec.trainers.token_classification.metrics import evaluate_sums, summarize
from nbexec.trainers.token_classification.model import build_model
from nbexec.trainers.token_classification.optimization import (
    build_optimizer,
    lr_factor,
    set_learning_rate,
    warmup_steps,
)
from nbexec.trainers.token_classification.precision import choose_precision

__all__ = ["main", "resolve_config", "train"]

TRAINER_NAME = "nbexec.trainers.token_classification"
DEFAULT_CHECKPOINT_DIR = Path(contract.CHECKPOINT_DIR)
# tiny-encoder's model fields whose change makes saved weights unusable.
_SHAPE_FIELDS = ("backbone", "d_model", "layers", "heads", "ff_dim")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nbexec.trainers.token_classification``.

    Raises:
        Whatever stopped training; the process then exits non-zero.
    """
    args = _parse_args(argv)
    ctx = create_run_context()
    sys.excepthook = _said_once(sys.excepthook, ctx)
    # Config and data errors surface before any rendezvous, so they fail fast on every rank.
    cfg = resolve_config(ctx.config, args.config)
    check_dataset(cfg["data"])
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
    m_cfg, t_cfg, d_cfg = cfg["model"], cfg["training"], cfg["data"]
    device = torch.device(ctx.device)
    seed = t_cfg["seed"]
    started = time.perf_counter()
    precision = choose_precision(t_cfg["mixed_precision"], device)

    ctx.report_phase("starting", "loading the data")
    # One process per node makes the synthetic dataset while the others wait; then every rank reads it.
    node_first(ctx, lambda: prepare_dataset(d_cfg))
    corpus = load_corpus(d_cfg)
    # What was actually used (data.path may have been the default): the run's summary and lineage say it.
    ctx.report_data(Path(corpus.path).resolve(), format=corpus.format, train_sentences=len(corpus.train),
                    val_sentences=len(corpus.val))
    ctx.report_phase("starting", "building the model")
    torch.manual_seed(seed)  # same initial weights on every rank (DDP also broadcasts them)
    task = _build_task(ctx, cfg, corpus)
    model = task.model.to(device)
    optimizer = build_optimizer(model, t_cfg)
    scaler = precision.make_scaler()
    start_epoch, global_step, history, best = 1, 0, [], None
    if resume_from:
        state = _restore(Path(resume_from), model, optimizer, cfg, task, device)
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        history, best = list(state.get("history", [])), state.get("best")
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
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
        task.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed  # type: ignore[arg-type]
    )
    pin = device.type == "cuda"
    batch_of = partial(collate, pad_id=task.pad_id)
    # In-memory examples: worker processes would cost more than they save.
    train_loader = DataLoader(
        task.train, batch_size=t_cfg["batch_size"], sampler=sampler, pin_memory=pin,  # type: ignore[arg-type]
        collate_fn=batch_of,
    )
    # Validation shards without the sampler's padding, so the summed counts are exact.
    val_loader = DataLoader(
        task.val[ctx.rank::ctx.world_size], batch_size=max(64, t_cfg["batch_size"]),  # type: ignore[arg-type]
        pin_memory=pin, collate_fn=batch_of,
    )
    # One line from every rank (the rest comes from rank 0): where it runs, in how big a world.
    print(f"rank {ctx.rank} of world size {ctx.world_size} (local rank {ctx.local_rank}) on {device}", flush=True)
    accumulate = t_cfg["grad_accumulation_steps"]
    micro_batches = len(train_loader)
    steps_per_epoch = math.ceil(micro_batches / accumulate)
    total_steps = t_cfg["epochs"] * steps_per_epoch
    if t_cfg["max_steps"] is not None:
        total_steps = min(total_steps, t_cfg["max_steps"])
    warmup = warmup_steps(t_cfg, total_steps)
    schedule = partial(lr_factor, total_steps=total_steps, warmup=warmup, schedule=t_cfg["lr_scheduler"])
    _say(
        ctx,
        f"training {m_cfg['backbone']} on {len(task.train)} sentences ({len(task.val)} val, "
        f"{corpus.format}) from {corpus.path}: {ctx.world_size} process(es) on {device.type} "
        f"({precision.name}), batch {t_cfg['batch_size']}/process x {accumulate} accumulated, "
        f"{steps_per_epoch} steps/epoch, epochs {start_epoch}..{t_cfg['epochs']}, {_count(model)} parameters",
    )
    if start_epoch > t_cfg["epochs"] or global_step >= total_steps:
        _say(ctx, f"nothing to do: the checkpoint already covers {global_step} steps")
        ctx.report_progress(global_step, total_steps, epoch=start_epoch - 1)
        return {}

    if resume_from:
        _carry_best(ctx, Path(resume_from), best)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    checkpoint_dir = Path(ctx.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    metrics: dict[str, float] = {}
    lr = t_cfg["learning_rate"]
    optimizer.zero_grad(set_to_none=True)
    ctx.report_progress(global_step, total_steps, epoch=start_epoch)  # training: the steps start now
    for epoch in range(start_epoch, t_cfg["epochs"] + 1):
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(seed, epoch, ctx.rank))  # dropout: resumable, per rank
        model.train()
        # Device-side sums: no host sync per step on GPUs.
        window = torch.zeros(2, dtype=torch.float64, device=device)
        epoch_sum = torch.zeros(2, dtype=torch.float64, device=device)
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        for index, batch in enumerate(train_loader):
            first_of_step = index - index % accumulate
            in_step = min(accumulate, micro_batches - first_of_step)  # the epoch's last step may take fewer
            steps_now = index - first_of_step + 1 == in_step
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            # Gradients are all-reduced on the step's last micro-batch only.
            sync = contextlib.nullcontext() if steps_now or not ctx.is_distributed else ddp.no_sync()  # type: ignore[operator]
            with sync:
                with precision.autocast():
                    logits = task.forward(ddp, batch)
                loss = loss_fn(logits.float().flatten(0, 1), batch["labels"].flatten()) / in_step
                (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += loss.detach().double()
            if not steps_now:
                continue
            lr = t_cfg["learning_rate"] * schedule(global_step)
            set_learning_rate(optimizer, lr)
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients
            if t_cfg["grad_clip"] is not None:
                nn.utils.clip_grad_norm_(model.parameters(), t_cfg["grad_clip"])
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            window += torch.stack([step_loss, torch.ones((), dtype=torch.float64, device=device)])
            step_loss.zero_()
            if global_step % t_cfg["log_every"] == 0:
                loss_sum, steps = all_reduce(ctx, window).tolist()
                epoch_sum += window
                window.zero_()
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
        train_loss_sum, train_steps = all_reduce(ctx, epoch_sum).tolist()
        last = global_step >= total_steps or epoch == t_cfg["epochs"]
        # After the last step the job is finishing; between epochs it is still training.
        ctx.report_phase("finishing" if last else "training", f"validating epoch {epoch}")

        sums = evaluate_sums(model, val_loader, task.labels, device, task.forward, precision.autocast)
        val = summarize(all_reduce(ctx, sums))
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
        improved = _improves(t_cfg["best_metric"], metrics, best)
        if improved:
            best = {"metric": t_cfg["best_metric"], "value": metrics[t_cfg["best_metric"]], "epoch": epoch,
                    "global_step": global_step, "path": BEST_DIR}
        if ctx.is_main:
            ctx.report_phase("finishing" if last else "training", "saving the checkpoint")
            if improved:
                save_best(checkpoint_dir, model, {**(best or {}), "metrics": metrics}, tokenizer=task.tokenizer)
            trainer_state = {
                "trainer": TRAINER_NAME,
                "epoch": epoch,
                "epoch_complete": global_step % steps_per_epoch == 0,
                "global_step": global_step,
                "seed": seed,
                "world_size": ctx.world_size,
                "precision": precision.name,
                # secrets (training.api_key, data.token...) stay out of checkpoints and their backups
                "config": split_secrets({k: dict(v) for k, v in cfg.items()})[0],
                "metrics": metrics,
                "history": history,
                "best": best,
                "dataset": task.dataset_record(corpus, d_cfg),
                "grad_scaler": scaler.state_dict() if scaler is not None else None,
                "time": time.time(),
            }
            save_checkpoint(checkpoint_dir, model, optimizer.state_dict(), trainer_state, tokenizer=task.tokenizer)
            ctx.report_checkpoint(checkpoint_dir, epoch=epoch, step=global_step)
            best_note = f" (best {best['metric']} {best['value']:.4f} at epoch {best['epoch']})" if best else ""
            _say(ctx, f"checkpoint saved to {checkpoint_dir}{best_note}")
        barrier(ctx)  # nobody reads or outruns a checkpoint that is still being written
        if global_step >= total_steps:
            break
    _say(ctx, f"training finished in {time.perf_counter() - started:.1f}s at step {global_step}")
    return metrics


class _Task:
    """The model, its inputs and how to call it: ``tiny-encoder`` or a Hugging Face backbone."""

    def __init__(self, model: nn.Module, train: list[Example], val: list[Example], labels: Sequence[str],
                 pad_id: int, forward: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
                 tokenizer: Any = None, vocab: Sequence[str] | None = None) -> None:
        self.model, self.train, self.val, self.labels = model, train, val, tuple(labels)
        self.pad_id, self.forward, self.tokenizer, self.vocab = pad_id, forward, tokenizer, vocab

    def dataset_record(self, corpus: Corpus, d_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What the checkpoint says of its data (and what a resume must match)."""
        record: dict[str, Any] = {"path": str(corpus.path.absolute()), "format": corpus.format,
                                  "labels": list(self.labels), "train": len(self.train), "val": len(self.val)}
        if self.vocab is not None:
            record.update(vocab=list(self.vocab), seq_len=d_cfg["seq_len"])
        return record


def _build_task(ctx: RunContext, cfg: Mapping[str, Mapping[str, Any]], corpus: Corpus) -> _Task:
    m_cfg, d_cfg = cfg["model"], cfg["data"]
    labels = corpus.labels
    if not schema.is_hf_backbone(m_cfg["backbone"]):
        vocab = corpus.vocab or word_vocabulary(corpus.train)
        model = build_model(m_cfg, vocab_size=len(vocab), num_labels=len(labels), max_len=d_cfg["seq_len"])
        return _Task(model, encode_words(corpus.train, vocab, labels, d_cfg["seq_len"]),
                     encode_words(corpus.val, vocab, labels, d_cfg["seq_len"]), labels, 0,
                     _tiny_forward, vocab=vocab)

    from nbexec.trainers.token_classification.hf import load_backbone, quiet_transformers

    quiet_transformers(warnings=ctx.is_main)
    # Each node's first rank loads (downloading into the node's cache); the others then read the cache.
    model, tokenizer = node_first(
        ctx, lambda: load_backbone(m_cfg["backbone"], labels, local_files_only=ctx.local_rank != 0)
    )
    quiet_transformers(warnings=ctx.is_main, progress=False)  # no bar per checkpoint save
    encode = partial(encode_subwords, tokenizer=tokenizer, labels=labels, max_length=m_cfg["max_length"],
                     subtoken_labels=m_cfg["subtoken_labels"])
    return _Task(model, encode(corpus.train), encode(corpus.val), labels, tokenizer.pad_token_id,
                 _hf_forward, tokenizer=tokenizer)


def _tiny_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["input_ids"])


def _hf_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _improves(metric: str, metrics: Mapping[str, float], best: Mapping[str, Any] | None) -> bool:
    if best is None or best.get("metric") != metric:
        return True
    value, previous = metrics[metric], float(best["value"])
    return value < previous if metric == "val_loss" else value > previous


def _carry_best(ctx: RunContext, source: Path, best: Mapping[str, Any] | None) -> None:
    """A resumed run's checkpoint keeps the best epoch so far, even if no later epoch beats it."""
    target = Path(ctx.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    if not ctx.is_main or best is None or not (source / BEST_DIR).is_dir():
        return
    if target.absolute() != source.absolute():
        shutil.copytree(source / BEST_DIR, target / BEST_DIR, dirs_exist_ok=True)


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Mapping[str, Any]],
    task: _Task,
    device: torch.device,
) -> dict[str, Any]:
    model_state, optimizer_state, state = load_checkpoint(path, map_location=device)
    saved_model = state.get("config", {}).get("model", {})
    fields = _SHAPE_FIELDS if task.vocab is not None else ("backbone",)
    changed = [k for k in fields if saved_model.get(k) != cfg["model"][k]]
    if changed:
        detail = ", ".join(f"{k}: {saved_model.get(k)!r} -> {cfg['model'][k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume from {path}: the model changed ({detail})")
    dataset = state.get("dataset", {})
    vocab_changed = task.vocab is not None and dataset.get("vocab") != list(task.vocab)
    if vocab_changed or dataset.get("labels") != list(task.labels):
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with another vocabulary or label set "
            f"than the dataset at {cfg['data']['path']}"
        )
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    # The saved state carries the old hyperparameters; the config asked for now wins
    # (the learning rate is set from the schedule before every step).
    optimizer.param_groups[0]["weight_decay"] = cfg["training"]["weight_decay"]
    return state


def _said_once(hook: Callable[..., Any], ctx: RunContext) -> Callable[..., Any]:
    """``sys.excepthook`` that says a config or data problem in one line, not a traceback per rank.

    Such an error is the user's to fix, not a bug: rank 0 says it (each node's
    first rank says its own), the other ranks, which raise the same one, keep
    quiet. nbexec's worker bootstrap records it either way, so it is the run's
    root cause. Every other exception goes to ``hook``.
    """

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> Any:
        if not isinstance(exc, ConfigError):
            return hook(exc_type, exc, tb)
        copied = getattr(exc, "copied_from_rank", None) is not None
        if ctx.rank == 0 or (ctx.local_rank == 0 and not copied):
            print(f"{TRAINER_NAME}: config error: {exc}", file=sys.stderr, flush=True)
        return None

    return excepthook


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    digest = hashlib.sha256(f"{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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
