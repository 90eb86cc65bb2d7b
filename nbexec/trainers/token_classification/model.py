"""The ``tiny-encoder`` backbone: embeddings, a transformer encoder, a per-token label head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["TokenClassifier", "build_model"]


class TokenClassifier(nn.Module):
    """Token embedding + learned positions + ``nn.TransformerEncoder`` + linear head.

    Args:
        vocab_size: number of token ids; id 0 is padding.
        num_labels: number of BIO labels.
        max_len: longest sequence the position table covers (``data.seq_len``).
        d_model, layers, heads, ff_dim, dropout: encoder shape.
    """

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        max_len: int,
        *,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        ff_dim: int = 128,
        dropout: float = 0.1,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.positions = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=ff_dim, dropout=dropout, batch_first=True,
            norm_first=True,  # pre-norm trains stably from scratch without warmup
        )
        # Nested tensors only pay off for long padded batches, and warn otherwise.
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, num_labels)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, seq, num_labels)`` for ``input_ids`` ``(batch, seq)``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.dropout(self.tokens(input_ids) + self.positions(positions))
        hidden = self.encoder(hidden, src_key_padding_mask=input_ids == self.pad_id)
        return self.head(hidden)


def build_model(
    model_cfg: Mapping[str, Any], *, vocab_size: int, num_labels: int, max_len: int
) -> TokenClassifier:
    """The model a resolved ``model`` section describes (backbone ``tiny-encoder``)."""
    return TokenClassifier(
        vocab_size,
        num_labels,
        max_len,
        d_model=model_cfg["d_model"],
        layers=model_cfg["layers"],
        heads=model_cfg["heads"],
        ff_dim=model_cfg["ff_dim"],
        dropout=model_cfg["dropout"],
    )
