"""Study and trial key hashes, and the data fingerprint they include: stable, and sensitive to every input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nbexec.errors import ConfigError
from nbexec.hpo import fingerprint as fp_module
from nbexec.hpo.fingerprint import data_fingerprint
from nbexec.hpo.keys import (
    compute_study_key_hash,
    compute_trial_key_hash,
    get_or_compute_study_key_hash,
    get_or_compute_trial_key_hash,
)

SPACE = {
    "training.learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True},
    "training.batch_size": {"type": "categorical", "choices": [8, 16]},
}
# the same space, keys and spec keys in another order, numbers written differently
SPACE_REORDERED = {
    "training.batch_size": {"choices": [8, 16], "type": "categorical"},
    "training.learning_rate": {"log": True, "high": 0.1, "low": "1e-3", "type": "float"},
}
PARAMS = {"training.learning_rate": 0.0123, "training.batch_size": 16}
PARAMS_REORDERED = {"training.batch_size": 16, "training.learning_rate": 0.0123}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "split").mkdir(parents=True)
    (root / "train.jsonl").write_text('{"tokens": ["a"]}\n')
    (root / "split" / "val.jsonl").write_text('{"tokens": ["b"]}\n')
    return root


def study_key(data_fp: str | None, space: dict = SPACE, objective: str = "val_loss",
              direction: str = "minimize", backbone: str = "tiny-encoder") -> str:
    return compute_study_key_hash(backbone=backbone, data_fingerprint=data_fp, search_space=space,
                                  objective=objective, direction=direction)


def test_same_inputs_give_the_same_hashes_in_another_process_and_any_key_order(dataset: Path,
                                                                               tmp_path: Path) -> None:
    fp = data_fingerprint(dataset, cache=tmp_path / "cache.json").sha256
    key = study_key(fp)
    trial = compute_trial_key_hash(key, PARAMS)
    assert study_key(fp, SPACE_REORDERED) == key
    assert compute_trial_key_hash(key, PARAMS_REORDERED) == trial
    code = (
        "import json, sys\n"
        "from nbexec.hpo.fingerprint import data_fingerprint\n"
        "from nbexec.hpo.keys import compute_study_key_hash, compute_trial_key_hash\n"
        "args = json.loads(sys.argv[1])\n"
        "fp = data_fingerprint(args['data'], cache=args['cache']).sha256\n"
        "key = compute_study_key_hash(backbone='tiny-encoder', data_fingerprint=fp, search_space=args['space'],"
        " objective='val_loss', direction='minimize')\n"
        "print(json.dumps([fp, key, compute_trial_key_hash(key, args['params'])]))\n"
    )
    args = {"data": str(dataset), "cache": str(tmp_path / "other-cache.json"), "space": SPACE_REORDERED,
            "params": PARAMS_REORDERED}
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another process with another str hash seed
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                         env=env, check=True, timeout=60)
    assert json.loads(out.stdout) == [fp, key, trial]


def test_any_change_of_data_space_objective_or_params_changes_the_hashes(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    fp = data_fingerprint(dataset, cache=cache).sha256
    key = study_key(fp)
    other_space = {**SPACE, "training.batch_size": {"type": "categorical", "choices": [8, 32]}}
    variants = {
        "space": study_key(fp, other_space),
        "objective": study_key(fp, objective="val_f1"),
        "direction": study_key(fp, direction="maximize"),
        "backbone": study_key(fp, backbone="other"),
        "no data": study_key(None),
    }
    (dataset / "split" / "val.jsonl").write_text('{"tokens": ["c"]}\n')  # one byte of one file
    variants["data"] = study_key(data_fingerprint(dataset, cache=cache).sha256)
    assert len({key, *variants.values()}) == len(variants) + 1, variants
    trial = compute_trial_key_hash(key, PARAMS)
    assert compute_trial_key_hash(key, {**PARAMS, "training.learning_rate": 0.0124}) != trial
    assert compute_trial_key_hash(key, {**PARAMS, "training.batch_size": 8}) != trial
    assert compute_trial_key_hash(variants["data"], PARAMS) != trial


def test_fingerprint_is_cached_by_size_and_mtime(dataset: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache.json"
    first = data_fingerprint(dataset, cache=cache)
    assert (first.files, first.hashed) == (2, 2)
    reads: list[str] = []
    real = fp_module.file_sha256
    monkeypatch.setattr(fp_module, "file_sha256", lambda p: reads.append(str(p)) or real(p))
    again = data_fingerprint(dataset, cache=cache)
    assert again.sha256 == first.sha256 and again.hashed == 0 and reads == []  # nothing read again
    train = dataset / "train.jsonl"
    train.write_text('{"tokens": ["z"]}\n')  # same size, new content and mtime
    os.utime(train, ns=(time.time_ns(), train.stat().st_mtime_ns + 1_000_000))
    changed = data_fingerprint(dataset, cache=cache)
    assert changed.sha256 != first.sha256 and reads == [str(train)]
    # moving the dataset keeps its fingerprint (paths are relative to it)
    moved = dataset.rename(tmp_path / "moved")
    assert data_fingerprint(moved, cache=cache).sha256 == changed.sha256
    assert data_fingerprint(tmp_path / "nowhere", cache=cache).sha256 is None


def test_get_or_compute_reads_what_is_stored_before_computing(tmp_path: Path, store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    inputs = {"backbone": "tiny-encoder", "data_fingerprint": "ab" * 32, "search_space": SPACE,
              "objective": "val_loss", "direction": "minimize"}
    key = get_or_compute_study_key_hash(study=study, **inputs)
    assert key == study_key("ab" * 32)
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").user_attrs[
        "nbexec.study_key_hash"] == key  # stored
    assert get_or_compute_study_key_hash(study=study) == key  # read back, nothing else needed
    with pytest.raises(ConfigError, match="backbone, search_space"):
        get_or_compute_study_key_hash()

    client = MlflowClient(store_uri)
    run_id = client.create_run(client.create_experiment("keys")).info.run_id
    trial = study.ask()
    trial.suggest_float("training.learning_rate", 1e-3, 1e-1, log=True)
    tkey = get_or_compute_trial_key_hash(trial=trial, study_key_hash=key, run_id=run_id, tracking_uri=store_uri)
    assert tkey == compute_trial_key_hash(key, trial.params)
    assert client.get_run(run_id).data.tags["nbexec.trial_key_hash"] == tkey
    assert get_or_compute_trial_key_hash(run_id=run_id, tracking_uri=store_uri) == tkey
    assert get_or_compute_trial_key_hash(trial=study.trials[0]) == tkey  # a FrozenTrial


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
