"""Sentences to model inputs: word ids for ``tiny-encoder``, aligned sub-tokens for a Hugging Face backbone.

Every example carries two label rows of its input's length:

- ``labels``: what the loss trains on. ``IGNORE_INDEX`` on padding, special
  tokens and (``subtoken_labels: first``) every sub-token but a word's first.
- ``word_labels``: the word's tag on its first sub-token only. Evaluation
  reads predictions there, so precision, recall and F1 are about words
  whatever ``subtoken_labels`` says, as seqeval scores them.

Batches are padded to their longest example (:func:`collate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nbexec.trainers.token_classification.corpus import Sentence
from nbexec.trainers.token_classification.data import PAD, UNK

__all__ = ["IGNORE_INDEX", "Example", "collate", "continuation_ids", "encode_subwords", "encode_words",
           "word_vocabulary"]

IGNORE_INDEX = -100  # a position the loss and the metrics skip
Example = dict[str, list[int]]  # input_ids, labels, word_labels


def word_vocabulary(train: Sequence[Sentence]) -> tuple[str, ...]:
    """tiny-encoder's vocabulary when the data names none: padding, unknown, then the training words."""
    return (PAD, UNK, *sorted({token for tokens, _ in train for token in tokens} - {PAD, UNK}))


def encode_words(
    sentences: Sequence[Sentence], vocab: Sequence[str], labels: Sequence[str], max_words: int
) -> list[Example]:
    """One id per word (unknown words -> ``<unk>``), sentences cut to ``max_words``."""
    ids = {token: i for i, token in enumerate(vocab)}
    label_ids = {label: i for i, label in enumerate(labels)}
    unk = ids[UNK]
    out = []
    for tokens, tags in sentences:
        row = [label_ids[t] for t in tags[:max_words]]
        out.append({"input_ids": [ids.get(t, unk) for t in tokens[:max_words]], "labels": row,
                    "word_labels": row})
    return out


def continuation_ids(labels: Sequence[str]) -> list[int]:
    """For each label id, the label a word's later sub-tokens get with ``subtoken_labels: all``.

    ``B-X`` continues as ``I-X`` when the label set has it (as Hugging Face's
    examples do); every other label continues as itself.
    """
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for i, label in enumerate(labels):
        prefix, _, kind = label.partition("-")
        out.append(index.get(f"I-{kind}", i) if prefix == "B" and kind else i)
    return out


def encode_subwords(
    sentences: Sequence[Sentence],
    tokenizer: Any,
    labels: Sequence[str],
    *,
    max_length: int,
    subtoken_labels: str = "first",
) -> list[Example]:
    """Tokenize words into sub-tokens with a fast tokenizer and align the word labels to them.

    Args:
        tokenizer: a ``PreTrainedTokenizerFast`` (``word_ids()`` maps sub-tokens to words).
        max_length: sub-tokens per sentence, special tokens included (the rest is cut).
        subtoken_labels: ``first`` (later sub-tokens of a word get IGNORE_INDEX) or ``all``.
    """
    label_ids = {label: i for i, label in enumerate(labels)}
    follow = continuation_ids(labels)
    encoded = tokenizer([list(tokens) for tokens, _ in sentences], is_split_into_words=True,
                        truncation=True, max_length=max_length)
    out = []
    for i, (_, tags) in enumerate(sentences):
        word_row: list[int] = []
        train_row: list[int] = []
        previous = None
        for word in encoded.word_ids(i):
            if word is None:  # [CLS], [SEP], padding
                word_row.append(IGNORE_INDEX)
                train_row.append(IGNORE_INDEX)
            elif word != previous:
                word_row.append(label_ids[tags[word]])
                train_row.append(label_ids[tags[word]])
            else:
                word_row.append(IGNORE_INDEX)
                train_row.append(follow[label_ids[tags[word]]] if subtoken_labels == "all" else IGNORE_INDEX)
            previous = word
        out.append({"input_ids": list(encoded["input_ids"][i]), "labels": train_row, "word_labels": word_row})
    return out


def collate(examples: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example: ``input_ids``, ``attention_mask``, ``labels``, ``word_labels``."""
    width = max(len(e["input_ids"]) for e in examples)
    ids, mask, labels, word_labels = [], [], [], []
    for e in examples:
        pad = width - len(e["input_ids"])
        ids.append(e["input_ids"] + [pad_id] * pad)
        mask.append([1] * len(e["input_ids"]) + [0] * pad)
        labels.append(e["labels"] + [IGNORE_INDEX] * pad)
        word_labels.append(e["word_labels"] + [IGNORE_INDEX] * pad)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "word_labels": torch.tensor(word_labels, dtype=torch.long),
    }
