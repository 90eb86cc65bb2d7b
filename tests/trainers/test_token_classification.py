"""The reference token-classification trainer, run for real: torchrun, gloo, 2 processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nbexec import contract
from nbexec.child import RunContext
from nbexec.errors import ConfigError
from nbexec.events import read_events
from nbexec.trainers.token_classification import data as ner_data
from nbexec.trainers.token_classification import schema
from nbexec.trainers.token_classification import train as train_mod
from nbexec.trainers.token_classification.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from nbexec.trainers.token_classification.corpus import load_corpus
from nbexec.trainers.token_classification.encoding import IGNORE_INDEX, collate, encode_words
from nbexec.trainers.token_classification.metrics import entity_spans, evaluate_sums, summarize
from nbexec.trainers.token_classification.model import build_model

MODULE = "nbexec.trainers.token_classification"
NUM_TRAIN, BATCH, LOG_EVERY = 400, 16, 5
STEPS_PER_EPOCH = math.ceil(NUM_TRAIN / 2 / BATCH)  # 2 ranks share the training set


def tiny_config(data_path: Path, *, epochs: int) -> dict[str, Any]:
    return {
        "model": {"d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
        # constant: the schedule does not depend on the run's length, so 1 epoch + resume = 2 epochs
        "training": {"learning_rate": 1e-2, "batch_size": BATCH, "epochs": epochs, "seed": 7,
                     "log_every": LOG_EVERY, "lr_scheduler": "constant"},
        "data": {"path": str(data_path), "num_train": NUM_TRAIN, "num_val": 80, "seq_len": 16},
        "launch": {"nproc": 2},  # nbexec's own sections ride along and must be ignored
    }


def _child_env(run_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBEXEC_")}
    env.update({
        contract.ENV_RUN_DIR: str(run_dir),
        contract.ENV_CONFIG: str(run_dir / contract.CONFIG_FILE),
        contract.ENV_EVENTS: str(run_dir / contract.EVENTS_FILE),
        contract.ENV_CHECKPOINT_DIR: str(run_dir / contract.CHECKPOINT_DIR),
        "OMP_NUM_THREADS": "1",
        **extra,
    })
    return env


def run_trainer(
    run_dir: Path, config: dict[str, Any], *args: str, nproc: int | None = 2, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the trainer as nbexec would; ``nproc=None`` runs it without torchrun."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / contract.CONFIG_FILE).write_text(yaml.safe_dump(config))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", "127.0.0.1:0"] if nproc else [sys.executable]
    return subprocess.run(
        [*launcher, "-m", MODULE, *args], env=_child_env(run_dir, **env), cwd=run_dir,
        capture_output=True, text=True, timeout=180,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def epoch_metrics(events: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [e["metrics"] for e in events if e["kind"] == "metrics" and "val_f1" in e["metrics"]]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic-ner"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    """An uninterrupted 2-epoch, 2-rank run; its run directory."""
    run_dir = tmp_path_factory.mktemp("straight")
    ok(run_trainer(run_dir, tiny_config(data_path, epochs=2)))
    return run_dir


# --- training under torchrun ---


@pytest.mark.slow
def test_two_ranks_train_report_and_checkpoint(straight_run: Path, data_path: Path) -> None:
    ckpt = straight_run / contract.CHECKPOINT_DIR
    assert {p.name for p in ckpt.iterdir()} == {"model.pt", "optimizer.pt", "trainer_state.json", "best"}
    assert {p.name for p in (ckpt / "best").iterdir()} == {"model.pt", "best.json"}
    model_state, _, state = load_checkpoint(ckpt)
    assert (state["epoch"], state["global_step"]) == (2, 2 * STEPS_PER_EPOCH)
    assert state["world_size"] == 2 and state["seed"] == 7
    assert state["config"]["model"]["d_model"] == 32
    assert state["config"]["training"]["weight_decay"] == schema.DEFAULTS["training"]["weight_decay"]
    assert "launch" not in state["config"]

    # The saved weights load strictly into a fresh model and reproduce the reported metrics.
    cfg = state["config"]
    model = build_model(cfg["model"], vocab_size=len(state["dataset"]["vocab"]),
                        num_labels=len(state["dataset"]["labels"]), max_len=cfg["data"]["seq_len"])
    model.load_state_dict(model_state, strict=True)
    corpus = load_corpus(cfg["data"])
    assert state["dataset"]["format"] == "synthetic" and state["dataset"]["path"] == str(data_path)
    val = encode_words(corpus.val, state["dataset"]["vocab"], corpus.labels, cfg["data"]["seq_len"])
    loader = torch.utils.data.DataLoader(val, batch_size=32, collate_fn=lambda b: collate(b, pad_id=0))
    again = summarize(evaluate_sums(model, loader, corpus.labels, "cpu", lambda m, b: m(b["input_ids"])))
    for name, value in again.items():
        assert state["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    best = json.loads((ckpt / "best" / "best.json").read_text())
    assert state["best"]["metric"] == best["metric"] == "val_f1"
    assert best["value"] == max(h["metrics"]["val_f1"] for h in state["history"])

    events = read_events(straight_run / contract.EVENTS_FILE)
    assert events and {e["rank"] for e in events} == {0}
    kinds = {e["kind"] for e in events}
    assert {"progress", "metrics", "checkpoint"} <= kinds
    progress = [e for e in events if e["kind"] == "progress"]
    assert all(e["total"] == 2 * STEPS_PER_EPOCH for e in progress)
    assert [e["step"] for e in progress] == sorted(e["step"] for e in progress)
    assert progress[-1]["step"] == 2 * STEPS_PER_EPOCH and progress[-1]["epoch"] == 2
    assert {e["epoch"] for e in progress} == {1, 2}

    step_losses = [(e["step"], e["metrics"]["loss"]) for e in events
                   if e["kind"] == "metrics" and "loss" in e["metrics"]]
    assert [s for s, _ in step_losses] == list(range(LOG_EVERY, 2 * STEPS_PER_EPOCH + 1, LOG_EVERY))
    assert step_losses[-1][1] < 0.5 * step_losses[0][1]
    per_epoch = epoch_metrics(events)
    assert [m["epoch"] for m in per_epoch] == [1.0, 2.0]
    assert per_epoch[1]["val_loss"] < per_epoch[0]["val_loss"]
    assert per_epoch[1]["train_loss"] < per_epoch[0]["train_loss"]
    assert per_epoch[-1] == state["metrics"]
    assert 0.0 <= per_epoch[-1]["val_f1"] <= 1.0

    saved = [e for e in events if e["kind"] == "checkpoint"]
    assert [(e["epoch"], e["step"]) for e in saved] == [(1, STEPS_PER_EPOCH), (2, 2 * STEPS_PER_EPOCH)]
    assert all(Path(e["path"]) == ckpt for e in saved)


@pytest.mark.slow
def test_resume_continues_at_next_epoch_and_matches_straight_run(
    tmp_path: Path, straight_run: Path, data_path: Path
) -> None:
    first = tmp_path / "first"
    ok(run_trainer(first, tiny_config(data_path, epochs=1)))
    first_state = json.loads((first / "checkpoint" / "trainer_state.json").read_text())
    assert (first_state["epoch"], first_state["global_step"]) == (1, STEPS_PER_EPOCH)

    # nbexec hands the checkpoint over through the environment.
    second = tmp_path / "second"
    ok(run_trainer(second, tiny_config(data_path, epochs=2),
                   **{contract.ENV_RESUME_FROM: str(first / "checkpoint")}))
    events = read_events(second / contract.EVENTS_FILE)
    progress = [e for e in events if e["kind"] == "progress"]
    assert {e["epoch"] for e in progress} == {2}
    # the first report is where training picks up (step 13 of 26, in epoch 2), then the steps go on from it
    assert progress[0]["step"] == STEPS_PER_EPOCH and progress[1]["step"] > STEPS_PER_EPOCH
    assert [m["epoch"] for m in epoch_metrics(events)] == [2.0]
    assert [e["epoch"] for e in events if e["kind"] == "checkpoint"] == [2]

    resumed_model, resumed_opt, resumed = load_checkpoint(second / "checkpoint")
    straight_model, straight_opt, straight = load_checkpoint(straight_run / "checkpoint")
    assert resumed["epoch"] == 2
    assert resumed["global_step"] == straight["global_step"] == 2 * STEPS_PER_EPOCH
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    # Same seed, per-epoch RNG derived from (seed, epoch, rank), deterministic gloo
    # sums on CPU: bit-identical weights and optimizer moments.
    assert resumed_model.keys() == straight_model.keys()
    for name, tensor in straight_model.items():
        assert torch.equal(resumed_model[name], tensor), name
    for pid, moments in straight_opt["state"].items():
        for key, value in moments.items():
            assert torch.equal(resumed_opt["state"][pid][key], value), (pid, key)
    assert resumed["metrics"] == straight["metrics"]


@pytest.mark.slow
def test_resume_of_a_finished_run_trains_nothing(
    tmp_path: Path, straight_run: Path, data_path: Path
) -> None:
    # One process, no torchrun (the plain-python path), resume through the flag.
    ckpt = straight_run / "checkpoint"
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    proc = ok(run_trainer(tmp_path, tiny_config(data_path, epochs=2), "--resume-from", str(ckpt),
                          nproc=None))
    assert "nothing to do" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.slow
def test_outside_nbexec_with_config_file_and_max_steps(tmp_path: Path, data_path: Path) -> None:
    # No NBEXEC_* variables, no torchrun: --config, ./checkpoint, no events.
    config = tiny_config(data_path, epochs=3)
    config["training"]["max_steps"] = 7
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBEXEC_")}
    proc = ok(subprocess.run([sys.executable, "-m", MODULE, "--config", "cfg.yaml"], cwd=tmp_path,
                             env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                             timeout=120))
    assert "at step 7" in proc.stdout
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["global_step"], state["epoch_complete"]) == (1, 7, False)
    assert state["world_size"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_model_shape(
    straight_run: Path, data_path: Path
) -> None:
    config = tiny_config(data_path, epochs=3)
    config["model"]["d_model"] = 64
    cfg = train_mod.resolve_config(config)
    with pytest.raises(CheckpointError, match="d_model: 32 -> 64"):
        train_mod.train(RunContext(), cfg, resume_from=straight_run / "checkpoint")


@pytest.mark.slow
def test_bad_config_fails_before_training(tmp_path: Path, data_path: Path) -> None:
    config = tiny_config(data_path, epochs=1)
    config["training"]["learning_rate"] = -1
    proc = run_trainer(tmp_path, config, nproc=None)
    assert proc.returncode != 0
    # Said once, as the user's problem to fix: no traceback.
    assert "config error: training.learning_rate = -1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoint").exists()


# --- schema ---


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "backbone", ""),
        ("model", "subtoken_labels", "last"),
        ("model", "max_length", 4),
        ("training", "grad_accumulation_steps", 0),
        ("training", "lr_scheduler", "cosine"),
        ("training", "warmup_ratio", 1.0),
        ("training", "mixed_precision", "fp8"),
        ("training", "best_metric", "f1"),
        ("data", "format", "csv"),
        ("data", "labels", ["O", "O"]),
        ("model", "d_model", 0),
        ("model", "heads", 2.5),
        ("training", "learning_rate", 0),
        ("training", "learning_rate", 1.5),
        ("training", "learning_rate", "fast"),
        ("training", "batch_size", True),
        ("training", "epochs", 0),
        ("training", "seed", "42"),
        ("training", "log_every", 0),
        ("training", "max_steps", 0),
        ("data", "path", ""),
        ("data", "num_train", -5),
        ("data", "num_val", None),
        ("data", "seq_len", 3),
    ],
)
def test_validate_rejects_bad_values(section: str, key: str, value: Any) -> None:
    sections: dict[str, dict[str, Any]] = {"model": {}, "training": {}, "data": {}}
    sections[section][key] = value
    with pytest.raises(ConfigError) as err:
        schema.validate(**sections)
    assert err.value.field == f"{section}.{key}"
    assert err.value.value == value
    assert f"{section}.{key} = {value!r}" in str(err.value)
    assert "allowed" in str(err.value) or "use" in str(err.value)


def test_validate_d_model_must_divide_by_heads() -> None:
    with pytest.raises(ConfigError) as err:
        schema.validate({"d_model": 30, "heads": 4}, {}, {})
    assert err.value.field == "model.d_model" and "heads" in str(err.value)


def test_resolved_fills_defaults_keeps_unknown_keys_and_reads_numeric_strings() -> None:
    from types import MappingProxyType

    cfg = schema.resolved(MappingProxyType({"layers": 3, "extra": MappingProxyType({"a": (1,)})}),
                          {"learning_rate": "3e-5", "max_steps": None}, {})
    assert cfg["model"] == {**schema.DEFAULTS["model"], "layers": 3, "extra": {"a": [1]}}
    assert cfg["training"]["learning_rate"] == 3e-5
    assert cfg["data"] == {**schema.DEFAULTS["data"],
                           "path": "outputs/data/synthetic-ner-train8000-val500-len32-seed0-v1"}
    schema.validate({}, {}, {})  # the defaults are valid
    cfg["data"]["num_train"] = 1
    assert schema.DEFAULTS["data"]["num_train"] != 1  # a fresh copy each time


def test_schema_and_data_generation_do_not_import_torch() -> None:
    code = textwrap.dedent(f"""
        import sys
        import {MODULE}, {MODULE}.schema, {MODULE}.data
        assert "torch" not in sys.modules, "torch was imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- data ---


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_generation_is_deterministic_and_well_formed(tmp_path: Path) -> None:
    params = {"seed": 3, "num_train": 300, "num_val": 50, "seq_len": 12}
    a = ner_data.generate_dataset(tmp_path / "a", **params)
    b = ner_data.generate_dataset(tmp_path / "b", **params)
    c = ner_data.generate_dataset(tmp_path / "c", **{**params, "seed": 4})
    assert set(_files(a)) == {"meta.json", "train.jsonl", "val.jsonl"}
    assert _files(a) == _files(b)
    assert _files(a)["train.jsonl"] != _files(c)["train.jsonl"]

    corpus = load_corpus({**schema.resolved()["data"], "path": str(a), **params})
    assert corpus.format == "synthetic" and corpus.labels == ner_data.LABELS and corpus.vocab is not None
    lines = [json.loads(x) for x in (a / "train.jsonl").read_text().splitlines()]
    assert len(lines) == 300 == len(corpus.train)
    for item in lines:
        assert 1 <= len(item["tokens"]) == len(item["labels"]) <= 12
        assert set(item["labels"]) <= set(corpus.labels)
        assert set(item["tokens"]) <= set(corpus.vocab)
    assert {"B-PER", "B-LOC", "B-ORG", "I-LOC"} <= {t for item in lines for t in item["labels"]}

    batch = collate(encode_words(corpus.val, corpus.vocab, corpus.labels, 12), pad_id=0)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape and ids.shape[0] == 50 and ids.shape[1] <= 12
    assert ((ids == 0) == (labels == IGNORE_INDEX)).all()  # padding, and only padding


def test_existing_dataset_is_kept_and_mismatches_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    ner_data.generate_dataset(target, seed=1, num_train=20, num_val=5, seq_len=8)
    before = _files(target)
    ner_data.generate_dataset(target, seed=1, num_train=20, num_val=5, seq_len=8)
    assert _files(target) == before
    with pytest.raises(ConfigError) as err:
        ner_data.generate_dataset(target, seed=1, num_train=21, num_val=5, seq_len=8)
    assert err.value.field == "data.path" and "num_train=20" in str(err.value)

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no meta.json"):
        ner_data.generate_dataset(stranger, seed=1, num_train=20, num_val=5, seq_len=8)

    # A user's own dataset (meta without "generator") is read as JSONL, with its vocabulary.
    own = tmp_path / "own"
    own.mkdir()
    meta = json.loads((target / "meta.json").read_text())
    del meta["generator"]
    (own / "meta.json").write_text(json.dumps(meta))
    sentence = json.dumps({"tokens": ["Alice", "Zorg"], "labels": ["B-PER", "O"]}) + "\n"
    (own / "train.jsonl").write_text(sentence)
    (own / "val.jsonl").write_text(sentence)
    corpus = load_corpus({**schema.resolved()["data"], "path": str(own)})
    assert corpus.format == "jsonl" and list(corpus.vocab or ()) == meta["vocab"]
    ids = encode_words(corpus.val, meta["vocab"], corpus.labels, 4)[0]["input_ids"]
    assert ids[1] == meta["vocab"].index(ner_data.UNK)


_GENERATE = (
    "import sys; from nbexec.trainers.token_classification.data import generate_dataset; "
    "generate_dataset(sys.argv[1], seed=5, num_train=int(sys.argv[2]), num_val=500, seq_len=32)"
)


def test_concurrent_generators_never_expose_a_partial_dataset(tmp_path: Path) -> None:
    num_train = "30000"  # a fraction of a second per generator: long enough to overlap
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", _GENERATE, str(reference), num_train], check=True)
    expected = _files(reference)

    target = tmp_path / "shared" / "ds"
    procs = [subprocess.Popen([sys.executable, "-c", _GENERATE, str(target), num_train])
             for _ in range(3)]
    seen = 0
    while any(p.poll() is None for p in procs):
        if target.exists():
            assert _files(target) == expected  # whenever it is visible, it is whole
            seen += 1
        time.sleep(0.005)
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert seen, "the dataset appeared only after every generator ended: no race was tested"
    assert _files(target) == expected
    assert [p.name for p in target.parent.iterdir()] == ["ds"]  # no temp dirs left behind


def test_killed_generator_leaves_no_dataset(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _GENERATE, str(target), "400000"])
    deadline = time.monotonic() + 120  # guards a hang only
    while not any(p.name.startswith(".ds.tmp-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "generator never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    # The stale temp dir does not block the next attempt.
    ner_data.generate_dataset(target, seed=5, num_train=10, num_val=5, seq_len=32)
    assert (target / "meta.json").is_file()


# --- metrics and checkpoint files ---


def test_entity_spans_follow_bio() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "B-ORG", "I-ORG", "I-LOC"]
    assert entity_spans(tags) == {(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "ORG"), (5, 7, "ORG"),
                                  (7, 8, "LOC")}
    assert entity_spans(["O", "O"]) == set()


def test_checkpoint_detects_files_that_do_not_belong_together(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, model, {"state": {}, "param_groups": []}, {"epoch": 1})
    model_state, _, state = load_checkpoint(tmp_path)
    assert torch.equal(model_state["weight"], model.weight) and state["epoch"] == 1
    assert state["weights"] == "model.pt" and set(state["files"]) == {"model.pt", "optimizer.pt"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "model.pt")  # as if a later save died here
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path)
