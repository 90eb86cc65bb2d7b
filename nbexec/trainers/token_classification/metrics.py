"""Validation metrics as sums, so that ranks can add theirs up before dividing.

``val_token_accuracy`` counts non-padding tokens; ``val_f1`` is entity-level
micro F1 over exact (start, end, type) spans read from BIO tags the conlleval
way (an ``I-X`` that does not continue an ``X`` span starts one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nbexec.trainers.token_classification.data import IGNORE_INDEX

__all__ = ["SUM_FIELDS", "entity_spans", "evaluate_sums", "summarize"]

# Order of the entries in the tensor returned by evaluate_sums.
SUM_FIELDS = ("loss_sum", "tokens", "correct", "true_positive", "predicted", "gold")


def entity_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """``{(start, end_exclusive, type)}`` of the entities in a BIO tag sequence."""
    spans: set[tuple[int, int, str]] = set()
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):  # the sentinel closes a span at the end
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind and start >= 0
        if start >= 0 and not continues:
            spans.add((start, i, kind))
            start, kind = -1, ""
        if prefix in ("B", "I") and not continues:
            start, kind = i, label
    return spans


@torch.no_grad()
def evaluate_sums(
    model: nn.Module,
    batches: torch.utils.data.DataLoader,
    labels: Sequence[str],
    device: torch.device | str,
) -> torch.Tensor:
    """Run ``model`` over ``batches`` and return float64 sums in :data:`SUM_FIELDS` order."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(SUM_FIELDS), dtype=torch.float64)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
    try:
        for input_ids, gold in batches:
            input_ids, gold = input_ids.to(device), gold.to(device)
            logits = model(input_ids)
            loss = loss_fn(logits.flatten(0, 1), gold.flatten())
            pred = logits.argmax(-1)
            mask = gold != IGNORE_INDEX
            sums[0] += loss.item()
            sums[1] += mask.sum().item()
            sums[2] += ((pred == gold) & mask).sum().item()
            for p_row, g_row, m_row in zip(pred.tolist(), gold.tolist(), mask.tolist()):
                n = sum(m_row)  # padding only at the end of a row
                p_spans = entity_spans([labels[i] for i in p_row[:n]])
                g_spans = entity_spans([labels[i] for i in g_row[:n]])
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
