"""The pieces of an HF-style fine-tune: metrics against seqeval, the schedule against transformers',
weight decay groups, mixed precision choices, sub-token label alignment."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nbexec.errors import ConfigError
from nbexec.trainers.token_classification.encoding import (
    IGNORE_INDEX,
    collate,
    continuation_ids,
    encode_subwords,
)
from nbexec.trainers.token_classification.metrics import entity_spans, evaluate_sums, summarize
from nbexec.trainers.token_classification.optimization import build_optimizer, lr_factor, warmup_steps
from nbexec.trainers.token_classification.precision import choose_precision

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "I-ORG", "B-MISC"]


def random_tags(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(TAGS) for _ in range(n)]


def test_entity_spans_are_seqeval_s() -> None:
    sequence_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")
    rng = random.Random(0)
    for _ in range(2000):  # every odd case: I- after O, type changes, IOBES tags, spans at the end
        tags = random_tags(rng, rng.randint(0, 12))
        expected = {(start, end + 1, kind) for kind, start, end in sequence_labeling.get_entities(tags)}
        assert entity_spans(tags) == expected, tags


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are the predictions given to it."""

    def forward(self, predicted: torch.Tensor, n_labels: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(predicted, n_labels).float()


def test_precision_recall_f1_are_seqeval_s_micro_average() -> None:
    metrics = pytest.importorskip("seqeval.metrics")
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    rng = random.Random(1)
    gold = [[rng.choice(labels) for _ in range(rng.randint(1, 10))] for _ in range(60)]
    # Predictions: mostly right, some wrong, so P, R and F1 all differ.
    pred = [[t if rng.random() < 0.7 else rng.choice(labels) for t in row] for row in gold]
    index = {t: i for i, t in enumerate(labels)}
    batch = collate([{"input_ids": [index[t] for t in p], "labels": [index[t] for t in g],
                      "word_labels": [index[t] for t in g]} for p, g in zip(pred, gold)], pad_id=0)
    sums = evaluate_sums(_Fixed(), [batch], labels, "cpu", lambda m, b: m(b["input_ids"], len(labels)))
    ours = summarize(sums)
    assert ours["val_precision"] == pytest.approx(metrics.precision_score(gold, pred))
    assert ours["val_recall"] == pytest.approx(metrics.recall_score(gold, pred))
    assert ours["val_f1"] == pytest.approx(metrics.f1_score(gold, pred))
    assert ours["val_precision"] != ours["val_recall"]


def test_schedule_is_transformers_linear_warmup_then_decay() -> None:
    transformers = pytest.importorskip("transformers")
    total, warmup = 20, 4
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    reference = transformers.get_linear_schedule_with_warmup(opt, warmup, total)
    for step in range(total):
        assert lr_factor(step, total_steps=total, warmup=warmup, schedule="linear") == pytest.approx(
            opt.param_groups[0]["lr"]), step
        opt.step()
        reference.step()
    constant = [lr_factor(s, total_steps=total, warmup=warmup, schedule="constant") for s in range(total)]
    assert constant[:5] == [0.0, 0.25, 0.5, 0.75, 1.0] and set(constant[4:]) == {1.0}
    assert warmup_steps({"warmup_ratio": 0.1, "warmup_steps": None}, 25) == 3
    assert warmup_steps({"warmup_ratio": 0.1, "warmup_steps": 7}, 25) == 7


def test_weight_decay_skips_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))
    opt = build_optimizer(model, {"learning_rate": 1e-3, "weight_decay": 0.1})
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[1].weight), id(model[1].bias), id(model[2].bias)}


def test_mixed_precision_choice() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_precision("auto", cpu).name == "fp32"
    assert choose_precision("bf16", cpu).name == "bf16"
    assert choose_precision("auto", gpu, bf16_supported=lambda: True).name == "bf16"
    fp16 = choose_precision("auto", gpu, bf16_supported=lambda: False)
    assert (fp16.name, fp16.uses_scaler, fp16.dtype) == ("fp16", True, torch.float16)
    assert choose_precision("no", gpu, bf16_supported=lambda: True).name == "fp32"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        choose_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="not supported by this GPU"):
        choose_precision("bf16", gpu, bf16_supported=lambda: False)
    # The CPU path that does run: bf16 autocast around a forward, float32 weights and gradients.
    bf16 = choose_precision("bf16", cpu)
    layer = torch.nn.Linear(4, 2)
    with bf16.autocast():
        out = layer(torch.ones(3, 4))
    assert out.dtype == torch.bfloat16 and bf16.make_scaler() is None
    out.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

    words = ["Paris"] * 3 + ["Blackburn", "visited"]
    room_for_one_word = 5 + 2 * len(set("parisblackburnvisited")) + 1  # specials, characters, 'paris'
    directory = build_tiny_distilbert(tmp_path_factory.mktemp("tiny") / "model", words,
                                      vocab_size=room_for_one_word)
    return AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("mode", ["first", "all"])
def test_word_labels_are_aligned_to_sub_tokens(tokenizer, mode: str) -> None:  # noqa: ANN001
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    sentence = (("Blackburn", "visited", "Paris"), ("B-PER", "O", "B-LOC"))
    (example,) = encode_subwords([sentence], tokenizer, labels, max_length=64, subtoken_labels=mode)
    pieces = tokenizer.convert_ids_to_tokens(example["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    words = tokenizer([list(sentence[0])], is_split_into_words=True).word_ids(0)
    assert words.count(0) > 1, f"the tokenizer should split 'Blackburn': {pieces}"
    first = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    # Evaluation sees each word once, on its first sub-token.
    assert [example["word_labels"][i] for i in first] == [1, 0, 3]
    assert all(v == IGNORE_INDEX for i, v in enumerate(example["word_labels"]) if i not in first)
    later_person = [example["labels"][i] for i, w in enumerate(words) if w == 0 and i not in first]
    assert later_person == ([IGNORE_INDEX] * len(later_person) if mode == "first" else [2] * len(later_person))
    assert example["labels"][0] == example["labels"][-1] == IGNORE_INDEX  # special tokens
    # Cut to max_length sub-tokens, special tokens included.
    (short,) = encode_subwords([sentence], tokenizer, labels, max_length=4, subtoken_labels=mode)
    assert len(short["input_ids"]) == 4


def test_continuation_labels() -> None:
    assert continuation_ids(["O", "B-PER", "I-PER", "B-MISC", "S-ORG"]) == [0, 2, 2, 3, 4]


def test_tiny_distilbert_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

    words = ["alpha", "beta", "gamma"]
    a = build_tiny_distilbert(tmp_path / "a", words, vocab_size=30)
    b = build_tiny_distilbert(tmp_path / "b", words, vocab_size=30)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
