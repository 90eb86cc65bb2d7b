"""Validation metrics as sums, so that ranks can add theirs up before dividing.

``val_token_accuracy`` counts words (a word's first sub-token for a Hugging
Face backbone). ``val_precision``, ``val_recall`` and ``val_f1`` are
entity-level and micro-averaged exactly as seqeval's default (conlleval) mode
scores them: :func:`entity_spans` reads spans from BIO/IOBES tags by seqeval's
rules (an ``I-X`` after ``O`` or after another type starts an entity), and an
entity counts only when its type, start and end all match.
``tests/trainers`` checks this against the ``seqeval`` package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nbexec.trainers.token_classification.encoding import IGNORE_INDEX

__all__ = ["SUM_FIELDS", "entity_spans", "evaluate_sums", "summarize"]

# Order of the entries in the tensor returned by evaluate_sums.
SUM_FIELDS = ("loss_sum", "tokens", "correct", "true_positive", "predicted", "gold")

Forward = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]  # (model, batch) -> logits


def _split(tag: str) -> tuple[str, str]:
    """``(prefix, type)`` as seqeval reads a tag: ``B-PER`` -> (B, PER); ``O`` -> (O, _)."""
    return tag[:1], tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != kind


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("E", "I") and prev in ("E", "S", "O"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def entity_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """``{(start, end_exclusive, type)}`` of the entities in a BIO (or IOBES) tag sequence."""
    spans: set[tuple[int, int, str]] = set()
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the sentinel closes an entity at the end
        prefix, kind = _split(tag)
        if _ends(prev, prefix, prev_type, kind):
            spans.add((begin, i, prev_type))
        if _starts(prev, prefix, prev_type, kind):
            begin = i
        prev, prev_type = prefix, kind
    return spans


@torch.no_grad()
def evaluate_sums(
    model: nn.Module,
    batches: Any,
    labels: Sequence[str],
    device: torch.device | str,
    forward: Forward,
    autocast: Callable[[], Any] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``batches`` and return float64 sums in :data:`SUM_FIELDS` order.

    Args:
        batches: dicts from :func:`.encoding.collate`; words are scored where
            ``word_labels`` is not IGNORE_INDEX.
        forward: ``(model, batch) -> logits (batch, seq, labels)``.
        autocast: a context manager factory for mixed precision (None: full precision).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(SUM_FIELDS), dtype=torch.float64)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            if autocast is not None:
                with autocast():
                    logits = forward(model, batch)
            else:
                logits = forward(model, batch)
            logits = logits.float()
            gold = batch["word_labels"]
            loss = loss_fn(logits.flatten(0, 1), gold.flatten())
            pred = logits.argmax(-1)
            mask = gold != IGNORE_INDEX
            sums[0] += loss.item()
            sums[1] += mask.sum().item()
            sums[2] += ((pred == gold) & mask).sum().item()
            for p_row, g_row, m_row in zip(pred.tolist(), gold.tolist(), mask.tolist()):
                p_spans = entity_spans([labels[p] for p, m in zip(p_row, m_row) if m])
                g_spans = entity_spans([labels[g] for g, m in zip(g_row, m_row) if m])
                sums[3] += len(p_spans & g_spans)
                sums[4] += len(p_spans)
                sums[5] += len(g_spans)
    finally:
        model.train(was_training)
    return sums


def summarize(sums: torch.Tensor) -> dict[str, float]:
    """``val_loss``, ``val_token_accuracy``, ``val_precision``, ``val_recall``, ``val_f1``."""
    loss_sum, tokens, correct, tp, predicted, gold = (float(x) for x in sums.tolist())
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "val_loss": loss_sum / max(tokens, 1.0),
        "val_token_accuracy": correct / max(tokens, 1.0),
        "val_precision": precision,
        "val_recall": recall,
        "val_f1": f1,
    }
