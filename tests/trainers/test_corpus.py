"""The trainer's data: formats told apart, read, labels from the data or the config, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbexec.errors import ConfigError
from nbexec.trainers.token_classification import schema
from nbexec.trainers.token_classification.corpus import check_dataset, detect_format, load_corpus, write_conll

SENTENCES = [
    (("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
    (("Peter", "Blackburn"), ("B-PER", "I-PER")),
    (("BRUSSELS", "1996-08-22"), ("B-LOC", "O")),
]


def data_cfg(path: Path, **fields: Any) -> dict[str, Any]:
    return schema.resolved(data={"path": str(path), **fields})["data"]


def test_conll_2003_text_is_read_as_written(tmp_path: Path) -> None:
    # The real file's shape: 4 columns, -DOCSTART- with its blank line, a blank line between sentences,
    # a tab-separated line, trailing spaces, no blank line at the end.
    (tmp_path / "train.txt").write_text(
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O  \n\n\n"
        "Peter\tNNP\tB-NP\tB-PER\nBlackburn NNP I-NP I-PER\n\n"
        "-DOCSTART- -X- -X- O\n\n"
        "BRUSSELS NNP B-NP B-LOC\n1996-08-22 CD I-NP O"
    )
    write_conll(tmp_path / "valid.txt", SENTENCES[:1])
    write_conll(tmp_path / "test.txt", [(("never", "read"), ("O", "O"))])
    assert detect_format(tmp_path) == "conll"
    corpus = load_corpus(data_cfg(tmp_path))
    assert corpus.format == "conll" and corpus.path == tmp_path
    assert list(corpus.train) == SENTENCES
    assert list(corpus.val) == SENTENCES[:1]
    # From the data: O first, then by type, B before I.
    assert corpus.labels == ("O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER")
    assert corpus.vocab is None


def test_conll_2003_original_file_names(tmp_path: Path) -> None:
    write_conll(tmp_path / "eng.train", SENTENCES)
    write_conll(tmp_path / "eng.testa", SENTENCES[1:])
    write_conll(tmp_path / "eng.testb", SENTENCES[:1])
    corpus = load_corpus(data_cfg(tmp_path))
    assert (corpus.format, len(corpus.train), len(corpus.val)) == ("conll", 3, 2)


def test_labels_from_the_config_keep_their_order_and_catch_unknown_tags(tmp_path: Path) -> None:
    write_conll(tmp_path / "train.txt", SENTENCES)
    write_conll(tmp_path / "dev.txt", SENTENCES)
    given = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    assert load_corpus(data_cfg(tmp_path, labels=given)).labels == tuple(given)
    with pytest.raises(ConfigError) as err:
        load_corpus(data_cfg(tmp_path, labels=["O", "B-PER", "I-PER"]))
    assert err.value.field == "data.labels"
    assert "['B-LOC', 'B-MISC', 'B-ORG']" in str(err.value) and "add them to data.labels" in str(err.value)


def test_jsonl_with_integer_tags_named_by_the_config(tmp_path: Path) -> None:
    names = ["O", "B-PER", "I-PER"]
    rows = [{"tokens": ["Peter", "Blackburn", "spoke"], "ner_tags": [1, 2, 0]}]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = load_corpus(data_cfg(tmp_path, labels=names))
    assert corpus.format == "jsonl"
    assert corpus.train == ((("Peter", "Blackburn", "spoke"), ("B-PER", "I-PER", "O")),)
    with pytest.raises(ConfigError, match=r"train.jsonl'.*line 1: integer tags need their names"):
        load_corpus(data_cfg(tmp_path))


def test_save_to_disk_dataset_with_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-LOC"]
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
    })
    rows = {"tokens": [["Peter", "Blackburn", "in", "Paris"]], "ner_tags": [[1, 2, 0, 3]]}
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "ds"))
    assert detect_format(tmp_path / "ds") == "hf_disk"
    corpus = load_corpus(data_cfg(tmp_path / "ds"))
    assert corpus.format == "hf_disk"
    assert corpus.labels == tuple(names)  # the ClassLabel's order, not the sorted tags
    assert corpus.train == ((("Peter", "Blackburn", "in", "Paris"), ("B-PER", "I-PER", "O", "B-LOC")),)

    split.save_to_disk(str(tmp_path / "single"))
    with pytest.raises(ConfigError, match="single Dataset; save a DatasetDict"):
        load_corpus(data_cfg(tmp_path / "single"))


def test_unknown_format_names_what_is_there_and_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "README").write_text("mine\n")
    with pytest.raises(ConfigError) as err:
        check_dataset(data_cfg(tmp_path))
    text = str(err.value)
    assert err.value.field == "data.path" and str(tmp_path) in text
    assert "README, notes.csv" in text and "CoNLL-2003 text (train.txt + valid.txt)" in text
    with pytest.raises(ConfigError, match="is a file, not a dataset directory"):
        check_dataset(data_cfg(tmp_path / "notes.csv"))


def test_missing_split_wrong_format_and_bad_lines_are_config_errors(tmp_path: Path) -> None:
    write_conll(tmp_path / "train.txt", SENTENCES)
    with pytest.raises(ConfigError, match="no validation split; add one of: validation.txt, valid.txt"):
        check_dataset(data_cfg(tmp_path))
    (tmp_path / "valid.txt").write_text("EU B-ORG\nrejects\n")
    assert check_dataset(data_cfg(tmp_path)) == "conll"
    with pytest.raises(ConfigError, match=r"valid.txt' line 2: 'rejects' has no tag"):
        load_corpus(data_cfg(tmp_path))
    with pytest.raises(ConfigError) as err:
        check_dataset(data_cfg(tmp_path, format="jsonl"))
    assert err.value.field == "data.format" and "holds conll data" in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        check_dataset(data_cfg(tmp_path / "typo", format="conll"))


def test_the_default_synthetic_path_is_keyed_by_the_generator_settings(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    small = schema.resolved(data={"num_train": 20, "num_val": 5, "seq_len": 8})["data"]
    large = schema.resolved(data={"num_train": 40, "num_val": 5, "seq_len": 8})["data"]
    assert small["path"] == "outputs/data/synthetic-ner-train20-val5-len8-seed0-v1"
    assert large["path"] != small["path"]
    for data in (small, large, small):  # each made once, then found again: no collision
        assert load_corpus(data).format == "synthetic"
    assert len(load_corpus(large).train) == 40
    # A path given explicitly is still checked against the settings asked for.
    with pytest.raises(ConfigError, match=r"num_train=20 \(asked 40\)"):
        check_dataset({**large, "path": small["path"]})
