"""A tiny random-init DistilBERT and its WordPiece tokenizer, made locally: a Hugging Face backbone with no download.

For tests, the example notebook and benchmarks (``nbexec[hf]``)::

    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert
    build_tiny_distilbert("outputs/tiny-distilbert", words=["Alice", "visited", "Paris"])
    # model: {backbone: outputs/tiny-distilbert}

The tokenizer is a ``tokenizers`` WordPiece with BERT's normalisation (lower
case) and pre-tokenizer. Its vocabulary holds every character of ``words``
(alone and as a ``##`` continuation) and, as far as ``vocab_size`` allows, the
most frequent words whole: the rest split into several sub-tokens, as rare
words do with a real vocabulary. Deterministic: the same arguments give the
same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["build_tiny_distilbert"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_distilbert(
    directory: str | Path,
    words: Iterable[str],
    *,
    vocab_size: int = 160,
    dim: int = 32,
    layers: int = 2,
    heads: int = 2,
    hidden_dim: int = 64,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a random-init DistilBERT (``DistilBertModel``) and a fast WordPiece tokenizer to ``directory``.

    Returns:
        ``directory``, loadable with ``AutoModelForTokenClassification.from_pretrained``
        (which adds a new classification head) and ``AutoTokenizer.from_pretrained``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pieces = [p for w in words for p, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(
        normalizer.normalize_str(w))]
    chars = sorted({c for p in pieces for c in p})
    counts: dict[str, int] = {}
    for p in pieces:
        counts[p] = counts.get(p, 0) + 1
    room = max(0, vocab_size - len(SPECIAL_TOKENS) - 2 * len(chars))
    whole = [p for p in sorted(counts, key=lambda p: (-counts[p], p)) if len(p) > 1][:room]
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *sorted(whole)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_positions,
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(), dim=dim, n_layers=layers, n_heads=heads, hidden_dim=hidden_dim,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for one small file is noise (and not the same twice)
    try:
        DistilBertModel(config).save_pretrained(directory, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return directory
