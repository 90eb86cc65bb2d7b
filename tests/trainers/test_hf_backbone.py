"""A Hugging Face backbone in the built-in trainer, run for real with no network.

A tiny random-init DistilBERT and its WordPiece tokenizer are made locally
(``tiny_hf``); the data is CoNLL-2003 text the tests write. Jobs go through
nbexec's one run path (torchrun, gloo, 2 processes, MLflow's SQLite store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import nbexec
from nbexec import contract
from nbexec.events import read_events
from nbexec.trainers.token_classification import data as synthetic
from nbexec.trainers.token_classification.corpus import load_corpus, write_conll
from nbexec.trainers.token_classification.encoding import collate, encode_subwords
from nbexec.trainers.token_classification.metrics import evaluate_sums, summarize
from nbexec.trainers.token_classification.optimization import lr_factor

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

LR, TRAIN, BATCH, ACCUMULATE = 5e-3, 192, 16, 2
STEPS_PER_EPOCH = TRAIN // 2 // BATCH // ACCUMULATE  # 2 ranks: 6 micro-batches each, 3 optimizer steps


@pytest.fixture(scope="module")
def conll_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CoNLL-2003 text (train.txt, valid.txt) of synthetic sentences."""
    source = synthetic.generate_dataset(tmp_path_factory.mktemp("synthetic") / "ds", seed=2, num_train=TRAIN,
                                        num_val=48, seq_len=16)
    out = tmp_path_factory.mktemp("conll")
    for split, name in (("train", "train.txt"), ("val", "valid.txt")):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
        write_conll(out / name, [(tuple(r["tokens"]), tuple(r["labels"])) for r in rows])
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, conll_dir: Path) -> Path:
    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

    words = [w for line in (conll_dir / "train.txt").read_text().splitlines() if line for w in line.split()[:1]]
    return build_tiny_distilbert(tmp_path_factory.mktemp("backbone") / "tiny-distilbert", words)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def hf_config(tiny_model: Path, conll_dir: Path, *, epochs: int) -> dict[str, Any]:
    return {
        "model": {"backbone": str(tiny_model), "max_length": 48},
        "training": {"learning_rate": LR, "batch_size": BATCH, "epochs": epochs, "log_every": 1,
                     "grad_accumulation_steps": ACCUMULATE, "warmup_ratio": 0.2},
        "data": {"path": str(conll_dir)},
        "launch": {"nproc": 2},
    }


@pytest.fixture(scope="module")
def first_run(tiny_model: Path, conll_dir: Path, workdir: Path) -> nbexec.TrainingResult:
    """Two epochs of the tiny DistilBERT, 2 ranks."""
    return nbexec.execute_training_subprocess(hf_config(tiny_model, conll_dir, epochs=2),
                                              output_dir=workdir / "outputs", stream=False, timeout=600)


def test_two_ranks_finish_report_f1_and_follow_the_schedule(first_run: nbexec.TrainingResult) -> None:
    assert first_run.status == "FINISHED"
    assert 0.0 <= first_run.metrics["val_f1"] <= 1.0
    assert {"val_precision", "val_recall", "val_loss", "train_loss"} <= set(first_run.metrics)
    events = read_events(first_run.run_dir / contract.EVENTS_FILE)
    steps = [e for e in events if e["kind"] == "metrics" and "learning_rate" in e["metrics"]]
    total = 2 * STEPS_PER_EPOCH
    warmup = 2  # ceil(0.2 * 6)
    assert [e["step"] for e in steps] == list(range(1, total + 1))
    expected = [LR * lr_factor(k, total_steps=total, warmup=warmup, schedule="linear") for k in range(total)]
    assert [e["metrics"]["learning_rate"] for e in steps] == pytest.approx(expected)
    epochs = [e["metrics"] for e in events if e["kind"] == "metrics" and "val_f1" in e["metrics"]]
    assert [m["epoch"] for m in epochs] == [1.0, 2.0]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]


def test_checkpoint_reloads_with_from_pretrained_and_reproduces_its_f1(
    first_run: nbexec.TrainingResult, conll_dir: Path
) -> None:
    ckpt = first_run.checkpoint
    assert ckpt is not None
    state = json.loads((ckpt / "trainer_state.json").read_text())
    model = transformers.AutoModelForTokenClassification.from_pretrained(ckpt)
    tokenizer = transformers.AutoTokenizer.from_pretrained(ckpt)
    labels = state["dataset"]["labels"]
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    assert state["dataset"]["format"] == "conll" and state["dataset"]["path"] == str(conll_dir)
    assert state["weights"] == "model.safetensors" and state["precision"] == "fp32"

    # The reloaded weights are the trained ones: they score the validation split as the run reported.
    corpus = load_corpus({"path": str(conll_dir), "format": "auto", "labels": None})
    val = encode_subwords(corpus.val, tokenizer, labels, max_length=48)
    batches = torch.utils.data.DataLoader(val, batch_size=64, collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
    again = summarize(evaluate_sums(model, batches, labels, "cpu",
                                    lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits))
    assert again["val_f1"] == pytest.approx(state["metrics"]["val_f1"], abs=1e-9)
    assert again["val_loss"] == pytest.approx(state["metrics"]["val_loss"], rel=1e-4)

    best = json.loads((ckpt / "best" / "best.json").read_text())
    assert best["metric"] == "val_f1" and best["epoch"] in (1, 2)
    assert best["value"] == max(h["metrics"]["val_f1"] for h in state["history"])
    assert transformers.AutoModelForTokenClassification.from_pretrained(ckpt / "best").config.num_labels == len(labels)

    # Lineage fingerprints the data the run trained on.
    lineage = nbexec.extract_lineage_from_best_model(first_run.run_dir)
    from nbexec.hpo import data_fingerprint

    assert lineage.data is not None and lineage.data.fingerprint == data_fingerprint(conll_dir).sha256


def test_resume_continues_at_the_next_epoch(
    first_run: nbexec.TrainingResult, tiny_model: Path, conll_dir: Path, workdir: Path
) -> None:
    resumed = nbexec.execute_training_subprocess(
        hf_config(tiny_model, conll_dir, epochs=3), output_dir=workdir / "outputs", stream=False, timeout=600,
        resume_from=first_run.checkpoint,
    )
    assert resumed.status == "FINISHED"
    events = read_events(resumed.run_dir / contract.EVENTS_FILE)
    assert {e["epoch"] for e in events if e["kind"] == "progress"} == {3}
    assert [e["step"] for e in events if e["kind"] == "metrics" and "learning_rate" in e["metrics"]] == \
        list(range(2 * STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1))
    state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert (resumed.checkpoint / "best" / "best.json").is_file()  # carried over if epoch 3 was not better
    assert transformers.AutoModelForTokenClassification.from_pretrained(resumed.checkpoint) is not None


def test_the_seed_example_runs_as_written(tiny_model: Path, conll_dir: Path, workdir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    from pathlib import Path as P

    from nbexec import execute_training_subprocess

    result = execute_training_subprocess(
        config={"model": {"backbone": str(tiny_model)},
                "training": {"learning_rate": 2e-5, "batch_size": 16}},
        output_dir=P("outputs/checkpoint"), data_path=P(conll_dir))
    assert result.status == "FINISHED" and result.nproc == 2
    assert "val_f1" in result.metrics and result.metrics["epoch"] == 2.0
    assert (result.checkpoint / "config.json").is_file()


def test_offline_without_the_model_is_said_once_with_the_fix(conll_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBEXEC_", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "nbexec", "train", "--no-tracking", "--nproc", "2", "--output", str(tmp_path),
         "--set", "model.backbone=distilbert-base-uncased", "--set", f"data.path={conll_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output  # a config error: model.backbone cannot be had here
    assert "Traceback" not in output
    said = [line for line in proc.stdout.splitlines() if "config error: model.backbone" in line]
    assert len(said) == 1 and said[0].startswith("[rank0!]"), output
    for part in ("'distilbert-base-uncased'", "HF_HUB_OFFLINE is set", "hf download distilbert-base-uncased",
                 str(tmp_path / "hf-home")):
        assert part in said[0], part
