"""A deterministic synthetic NER dataset: generated once per ``data.path``, then loaded.

Layout of ``data.path`` (by default ``outputs/data/synthetic-ner-<settings>``,
relative to the job's working directory: see :func:`.schema.synthetic_data_path`)::

    meta.json     {"labels": [...], "vocab": [...], "generator": {...}, "counts": {...}}
    train.jsonl   one sentence a line: {"tokens": [...], "labels": ["B-PER", "O", ...]}
    val.jsonl

Sentences come from templates with PER/LOC/ORG spans in BIO tags. Some names
are ambiguous ("Jordan" is a person or a country, "Washington" a person, a
place or part of an organisation) so the model has to use context.

A directory in this format without a ``generator`` entry in ``meta.json`` is
the user's own JSONL data (:mod:`.corpus` reads every format). Generation writes into a
temporary sibling directory and renames it into place, so concurrent
generators (ranks, jobs) never expose a half-written dataset.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbexec.errors import ConfigError

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "PAD",
    "UNK",
    "check_existing",
    "ensure_dataset",
    "generate_dataset",
    "generator_params",
]

GENERATOR_NAME = "synthetic-ner"
GENERATOR_VERSION = 1  # bump when the output for a given seed changes
PAD, UNK = "<pad>", "<unk>"
LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")

_FIRST = ("Alice", "Bob", "Maria", "Wei", "Omar", "Priya", "Lukas", "Sofia",
          "Kenji", "Amara", "Jordan", "Georgia", "Paris", "Chelsea", "Austin")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Tanaka", "Silva",
         "Washington", "Lincoln", "Jordan")
_LOC = (("Paris",), ("London",), ("Berlin",), ("Tokyo",), ("Lagos",), ("Jordan",),
        ("Georgia",), ("Washington",), ("Chelsea",), ("Austin",), ("New", "York"),
        ("San", "Francisco"), ("Buenos", "Aires"), ("Hong", "Kong"), ("Cape", "Town"))
_ORG = (("Acme",), ("Globex",), ("Initech",), ("Umbrella",), ("Acme", "Corp"),
        ("United", "Nations"), ("Red", "Cross"), ("Washington", "Post"),
        ("Paris", "Saint", "Germain"), ("Bank", "of", "Tokyo"), ("New", "York", "Times"))
# Clauses: words, or a slot for an entity of that type.
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{PER}", "visited", "{LOC}"),
    ("{PER}", "works", "at", "{ORG}"),
    ("{PER}", "works", "for", "{ORG}", "in", "{LOC}"),
    ("{PER}", "met", "{PER}", "in", "{LOC}"),
    ("{ORG}", "opened", "an", "office", "in", "{LOC}"),
    ("{ORG}", "hired", "{PER}"),
    ("{PER}", "moved", "from", "{LOC}", "to", "{LOC}"),
    ("the", "CEO", "of", "{ORG}", "is", "{PER}"),
    ("{PER}", "was", "born", "in", "{LOC}"),
    ("{ORG}", "announced", "a", "partnership", "with", "{ORG}"),
    ("yesterday", "{PER}", "spoke", "about", "{LOC}"),
    ("a", "report", "by", "{ORG}", "said", "{LOC}", "is", "growing"),
    ("{PER}", "lives", "near", "{LOC}"),
    ("the", "weather", "in", "{LOC}", "was", "cold", "today"),
)
_JOINERS = (("and",), (",",), (".",), ("while",), ("but",))


def _vocabulary() -> tuple[str, ...]:
    words = set(_FIRST) | set(_LAST)
    for phrase in (*_LOC, *_ORG, *_TEMPLATES, *_JOINERS):
        words.update(w for w in phrase if not w.startswith("{"))
    return (PAD, UNK, *sorted(words))


def _entity(rng: random.Random, kind: str) -> list[str]:
    if kind == "PER":
        name = [rng.choice(_FIRST)]
        if rng.random() < 0.6:
            name.append(rng.choice(_LAST))
        return name
    return list(rng.choice(_LOC if kind == "LOC" else _ORG))


def _sentence(rng: random.Random, max_len: int) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    labels: list[str] = []
    while True:
        clause_tokens: list[str] = []
        clause_labels: list[str] = []
        for word in rng.choice(_TEMPLATES):
            if word.startswith("{"):
                kind = word[1:-1]
                span = _entity(rng, kind)
                clause_tokens += span
                clause_labels += [f"B-{kind}"] + [f"I-{kind}"] * (len(span) - 1)
            else:
                clause_tokens.append(word)
                clause_labels.append("O")
        joiner = list(rng.choice(_JOINERS)) if tokens else []
        if len(tokens) + len(joiner) + len(clause_tokens) > max_len:
            if tokens:
                return tokens, labels
            continue  # first clause too long for a small seq_len: draw another
        tokens += joiner + clause_tokens
        labels += ["O"] * len(joiner) + clause_labels
        if rng.random() < 0.5:
            return tokens, labels


def generate_dataset(
    target: str | os.PathLike[str], *, seed: int, num_train: int, num_val: int, seq_len: int
) -> Path:
    """Write a synthetic dataset to ``target`` unless one is already there.

    Deterministic: the same arguments give byte-identical files. The dataset
    appears at ``target`` complete or not at all.

    Returns:
        ``target`` as a Path.

    Raises:
        ConfigError: ``target`` exists but holds something else, or a dataset
            generated with other settings.
    """
    target = Path(target)
    params = generator_params({"seed": seed, "num_train": num_train, "num_val": num_val, "seq_len": seq_len})
    if check_existing(target, params):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the dataset from other users
        _write(tmp, params)
        try:
            # Atomic on POSIX; fails if another writer got there first (ENOTEMPTY)
            # and replaces only an empty directory.
            os.rename(tmp, target)
        except OSError:
            if not check_existing(target, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_dataset(data: Mapping[str, Any]) -> Path:
    """The synthetic dataset of a resolved ``data`` section at ``data.path``, generated if absent."""
    return generate_dataset(
        data["path"],
        seed=data["seed"],
        num_train=data["num_train"],
        num_val=data["num_val"],
        seq_len=data["seq_len"],
    )


def generator_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the generator records in ``meta.json`` for the settings of a ``data`` section."""
    return {
        "name": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": data["seed"],
        "num_train": data["num_train"],
        "num_val": data["num_val"],
        "seq_len": data["seq_len"],
    }


def check_existing(target: Path, params: Mapping[str, Any]) -> bool:
    """True if ``target`` holds a usable dataset, False if absent or an empty directory.

    Raises:
        ConfigError: ``target`` holds something else, or a synthetic dataset generated with other settings.
    """
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return False
    meta_path = target / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"data.path {str(target)!r} exists but holds no dataset (no meta.json); "
            "point data.path at an empty or missing directory, or at a dataset",
            field="data.path",
            value=str(target),
        )
    found = json.loads(meta_path.read_text(encoding="utf-8")).get("generator")
    if found is not None and dict(found) != dict(params):
        diff = ", ".join(
            f"{k}={found.get(k)!r} (asked {v!r})" for k, v in params.items() if found.get(k) != v
        )
        raise ConfigError(
            f"data.path {str(target)!r} holds a synthetic dataset generated with {diff}; "
            "leave data.path unset (each setting of the synthetic data then gets a directory of its own), "
            "use another data.path for these settings, or delete that directory",
            field="data.path",
            value=str(target),
        )
    return True


def _write(directory: Path, params: Mapping[str, Any]) -> None:
    rng = random.Random(params["seed"])
    counts = {"train": params["num_train"], "val": params["num_val"]}
    for split, count in counts.items():
        lines = []
        for _ in range(count):
            tokens, labels = _sentence(rng, params["seq_len"])
            lines.append(json.dumps({"tokens": tokens, "labels": labels}, separators=(",", ":")))
        _write_text(directory / f"{split}.jsonl", "\n".join(lines) + "\n")
    meta = {
        "labels": list(LABELS),
        "vocab": list(_vocabulary()),
        "pad_token": PAD,
        "unk_token": UNK,
        "generator": dict(params),
        "counts": counts,
    }
    _write_text(directory / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())  # the rename must never publish files still in the page cache only
