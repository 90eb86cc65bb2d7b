"""The training data: which format ``data.path`` holds, and its sentences and labels.

Formats (``data.format: auto`` tells them apart by their files):

    conll      CoNLL-2003 text: a token per line with its tag in the last column
               (columns split on spaces or tabs), a blank line between sentences,
               ``-DOCSTART-`` lines skipped. Splits: ``train.txt`` and
               ``valid.txt`` (or ``dev``/``val``/``validation``; ``.txt``,
               ``.conll``, ``.iob``, ``.bio``, ``.tsv``), or ``eng.train`` and
               ``eng.testa``.
    jsonl      ``train.jsonl`` and ``val.jsonl`` (or ``valid``/``dev``/``validation``),
               a sentence a line: ``{"tokens": [...], "labels": [...]}`` (also
               ``ner_tags``/``tags``; integer tags need ``meta.json`` labels or
               ``data.labels``); an optional ``meta.json`` gives ``labels`` and ``vocab``.
    hf_disk    a ``datasets.DatasetDict`` saved with ``save_to_disk``, with a
               ``train`` and a ``validation`` (or ``valid``/``val``/``dev``) split, a
               ``tokens`` column and a ``ner_tags`` (or ``labels``/``tags``) column;
               a ``ClassLabel`` feature names the tags. Needs ``datasets`` (``nbexec[hf]``).
    synthetic  the generated dataset (:mod:`.data`): a JSONL directory whose
               ``meta.json`` names its generator. A missing or empty ``data.path``
               gets one (``data.format: auto`` or ``synthetic``).

Labels come from ``data.labels`` when given (a tag in the data that is not
listed is an error), else from the data's own list (``meta.json``, a
``ClassLabel``), else from the tags seen: ``O`` first, then by entity type, ``B``
before ``I``. Every problem is a :class:`~nbexec.errors.ConfigError` that names
the file (and line) and what to do. No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.errors import ConfigError
from nbexec.trainers.token_classification import data as synthetic

__all__ = [
    "Corpus",
    "Sentence",
    "check_dataset",
    "detect_format",
    "load_corpus",
    "prepare_dataset",
    "write_conll",
]

Sentence = tuple[tuple[str, ...], tuple[str, ...]]  # (tokens, tags), one tag per token

TRAIN_NAMES = ("train",)
VAL_NAMES = ("validation", "valid", "val", "dev", "testa")
CONLL_SUFFIXES = (".txt", ".conll", ".conll03", ".iob", ".bio", ".tsv")
TAG_COLUMNS = ("ner_tags", "labels", "tags")
DOCSTART = "-DOCSTART-"
_EXPECTED = (
    "a directory with CoNLL-2003 text (train.txt + valid.txt), JSONL (train.jsonl + val.jsonl), "
    "or a datasets DatasetDict saved with save_to_disk (train + validation splits)"
)


@dataclass(frozen=True)
class Corpus:
    """A dataset read into memory.

    Attributes:
        path: the directory it was read from.
        format: ``conll``, ``jsonl``, ``hf_disk`` or ``synthetic``.
        train, val: the sentences of each split.
        labels: the tag set, in label-id order.
        vocab: the words the dataset names as its vocabulary (the synthetic one
            does), else None (tiny-encoder then builds one from the training split).
    """

    path: Path
    format: str
    train: tuple[Sentence, ...]
    val: tuple[Sentence, ...]
    labels: tuple[str, ...]
    vocab: tuple[str, ...] | None = None


def detect_format(path: str | Path) -> str:
    """The format of the dataset directory ``path``: ``synthetic`` for a missing or empty one.

    Raises:
        ConfigError: ``path`` is a file, or a directory in none of the formats
            (the message lists what it holds and what is expected).
    """
    root = Path(path)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return "synthetic"
    if not root.is_dir():
        raise _error(root, f"is a file, not a dataset directory; point data.path at {_EXPECTED}")
    meta = root / "meta.json"
    if meta.is_file() and _read_json(meta).get("generator") is not None:
        return "synthetic"
    if (root / "dataset_dict.json").is_file() or (root / "dataset_info.json").is_file():
        return "hf_disk"
    if _split_file(root, TRAIN_NAMES, (".jsonl",)) is not None:
        return "jsonl"
    if _split_file(root, TRAIN_NAMES, CONLL_SUFFIXES) is not None:
        return "conll"
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "")
    raise _error(root, f"holds no dataset nbexec can read ({shown}); expected {_EXPECTED}, "
                       "or an empty directory for the synthetic dataset")


def check_dataset(data_cfg: Mapping[str, Any]) -> str:
    """Check ``data.path`` without reading it whole (every rank, before the rendezvous).

    Returns:
        The format.

    Raises:
        ConfigError: an unknown format, a format other than the one asked for,
            a synthetic dataset generated with other settings, a missing split.
    """
    root = Path(data_cfg["path"])
    found = detect_format(root)
    asked = data_cfg.get("format", "auto")
    if found == "synthetic" and asked not in ("auto", "synthetic") and not root.exists():
        raise _error(root, f"does not exist (data.format is {asked!r}); point data.path at your dataset")
    if asked not in ("auto", found):
        raise ConfigError(
            f"data.format is {asked!r} but data.path {str(root)!r} holds {found} data; "
            "set data.format to 'auto' or to the format it holds",
            field="data.format", value=asked,
        )
    if found == "synthetic":
        synthetic.check_existing(root, synthetic.generator_params(data_cfg))
    elif found in ("conll", "jsonl"):
        _val_file(root, CONLL_SUFFIXES if found == "conll" else (".jsonl",))
    return found


def prepare_dataset(data_cfg: Mapping[str, Any]) -> Path:
    """``data.path`` after :func:`check_dataset`, with the synthetic dataset generated where due."""
    fmt = check_dataset(data_cfg)
    if fmt == "synthetic":
        return synthetic.ensure_dataset(data_cfg)
    return Path(data_cfg["path"])


def load_corpus(data_cfg: Mapping[str, Any]) -> Corpus:
    """Read the dataset of a resolved ``data`` section (generated first if it is the synthetic one).

    Raises:
        ConfigError: see :func:`check_dataset`; a malformed line or record
            (file and line named); a tag not in ``data.labels``; a ``save_to_disk``
            dataset without ``datasets`` installed.
    """
    root = prepare_dataset(data_cfg)
    fmt = detect_format(root)
    names: Sequence[str] | None = None
    vocab: tuple[str, ...] | None = None
    if fmt == "hf_disk":
        train, val, names = _read_hf_disk(root, data_cfg.get("labels"))
    else:
        suffixes = (".jsonl",) if fmt in ("jsonl", "synthetic") else CONLL_SUFFIXES
        train_file = _split_file(root, TRAIN_NAMES, suffixes)
        assert train_file is not None  # detect_format found it
        val_file = _val_file(root, suffixes)
        if fmt == "conll":
            train, val = _read_conll(train_file), _read_conll(val_file)
        else:
            meta = _read_json(root / "meta.json") if (root / "meta.json").is_file() else {}
            names = meta.get("labels") or data_cfg.get("labels")
            vocab = tuple(meta["vocab"]) if meta.get("vocab") else None
            train = _read_jsonl(train_file, names)
            val = _read_jsonl(val_file, names)
    labels = _label_set(train, val, data_cfg.get("labels") or names, root)
    return Corpus(path=root, format=fmt, train=train, val=val, labels=labels, vocab=vocab)


def write_conll(path: str | Path, sentences: Iterable[Sentence], *, docstart: bool = True) -> Path:
    """Write sentences as CoNLL-2003 text (``token POS chunk tag``, POS and chunk as ``-X-``)."""
    lines = [f"{DOCSTART} -X- -X- O", ""] if docstart else []
    for tokens, tags in sentences:
        lines += [f"{token} -X- -X- {tag}" for token, tag in zip(tokens, tags)]
        lines.append("")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- formats ------------------------------------------------------------------------


def _read_conll(path: Path) -> tuple[Sentence, ...]:
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            columns = line.split()
            if not columns or columns[0] == DOCSTART:
                if tokens:
                    sentences.append((tuple(tokens), tuple(tags)))
                    tokens, tags = [], []
                continue
            if len(columns) < 2:
                raise _error(path, f"line {number}: {line.strip()!r} has no tag; a CoNLL line is a token "
                                   "and its tag in the last column (e.g. 'Paris NNP B-NP B-LOC')")
            tokens.append(columns[0])
            tags.append(columns[-1])
    if tokens:
        sentences.append((tuple(tokens), tuple(tags)))
    if not sentences:
        raise _error(path, "holds no sentences")
    return tuple(sentences)


def _read_jsonl(path: Path, names: Sequence[str] | None) -> tuple[Sentence, ...]:
    sentences: list[Sentence] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise _error(path, f"line {number} is not JSON ({err.msg})") from None
            where = f"line {number}"
            if not isinstance(item, dict):
                raise _error(path, f"{where} is not a JSON object with tokens and labels")
            sentences.append(_sentence(path, where, item.get("tokens"), _tag_value(item), names))
    if not sentences:
        raise _error(path, "holds no sentences")
    return tuple(sentences)


def _read_hf_disk(
    root: Path, config_labels: Sequence[str] | None
) -> tuple[tuple[Sentence, ...], tuple[Sentence, ...], Sequence[str] | None]:
    try:
        import datasets
    except ImportError as err:
        raise _error(root, f"is a dataset saved with save_to_disk, and reading it needs the 'datasets' package "
                           f"({err}); install it: pip install 'nbexec[hf]'") from err
    loaded = datasets.load_from_disk(str(root))
    if not isinstance(loaded, datasets.DatasetDict):
        raise _error(root, "is a single Dataset; save a DatasetDict with a train and a validation split "
                           "(DatasetDict({'train': ..., 'validation': ...}).save_to_disk(path))")
    splits = list(loaded)
    train_name = next((s for s in TRAIN_NAMES if s in loaded), None)
    val_name = next((s for s in VAL_NAMES if s in loaded), None)
    if train_name is None or val_name is None:
        raise _error(root, f"has the splits {splits}; it needs 'train' and one of {list(VAL_NAMES)}")
    train_split = loaded[train_name]
    column = next((c for c in TAG_COLUMNS if c in train_split.column_names), None)
    if "tokens" not in train_split.column_names or column is None:
        raise _error(root, f"has the columns {train_split.column_names}; it needs 'tokens' and one of "
                           f"{list(TAG_COLUMNS)}")
    feature = train_split.features[column]
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) in datasets < 4, List(...) after
    names = getattr(inner, "names", None) or config_labels
    out = []
    for name in (train_name, val_name):
        split = loaded[name]
        out.append(tuple(
            _sentence(root, f"split {name!r} row {i}", row["tokens"], row[column], names)
            for i, row in enumerate(split.select_columns(["tokens", column]))
        ))
    return out[0], out[1], names


def _tag_value(item: Mapping[str, Any]) -> Any:
    return next((item[c] for c in ("labels", *TAG_COLUMNS) if c in item), None)


def _sentence(path: Path, where: str, tokens: Any, tags: Any, names: Sequence[str] | None) -> Sentence:
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise _error(path, f"{where}: needs a 'tokens' list and a 'labels' (or ner_tags/tags) list")
    if len(tokens) != len(tags):
        raise _error(path, f"{where}: {len(tokens)} tokens but {len(tags)} tags")
    if any(isinstance(t, int) for t in tags):
        if not names:
            raise _error(path, f"{where}: integer tags need their names; list them in data.labels "
                               "(or 'labels' in meta.json)")
        if any(not isinstance(t, int) or not 0 <= t < len(names) for t in tags):
            raise _error(path, f"{where}: tag ids {tags} do not fit the {len(names)} labels {list(names)}")
        tags = [names[t] for t in tags]
    return tuple(str(t) for t in tokens), tuple(str(t) for t in tags)


def _label_set(
    train: Sequence[Sentence], val: Sequence[Sentence], given: Sequence[str] | None, root: Path
) -> tuple[str, ...]:
    seen = {tag for split in (train, val) for _, tags in split for tag in tags}
    if given:
        unknown = sorted(seen - set(given))
        if unknown:
            raise ConfigError(
                f"the dataset at {str(root)!r} has tags that are not in the label list {list(given)}: {unknown}; "
                "add them to data.labels (or leave data.labels unset to take the labels from the data)",
                field="data.labels", value=list(given),
            )
        return tuple(given)
    return tuple(sorted(seen, key=_tag_order))


def _tag_order(tag: str) -> tuple[bool, str, str]:
    prefix, _, kind = tag.partition("-")
    return tag != "O", kind or prefix, prefix  # O, then by entity type, B- before I-


def _split_file(root: Path, names: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    for name in names:
        for suffix in suffixes:
            candidate = root / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        if suffixes != (".jsonl",):  # CoNLL-2003's own names: eng.train, eng.testa
            found = sorted(p for p in root.glob(f"*.{name}") if p.is_file())
            if found:
                return found[0]
    return None


def _val_file(root: Path, suffixes: Sequence[str]) -> Path:
    found = _split_file(root, VAL_NAMES, suffixes)
    if found is None:
        names = ", ".join(f"{n}{suffixes[0]}" for n in VAL_NAMES[:4])
        raise _error(root, f"has a training split but no validation split; add one of: {names}")
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _error(path, f"cannot be read as JSON ({err})") from None
    if not isinstance(value, dict):
        raise _error(path, "is not a JSON object")
    return value


def _error(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"data.path: {str(path)!r} {problem}", field="data.path", value=str(path))

