"""nbexec.hashing: every hash nbexec stores, pinned to the values it stored before the helpers were merged.

Config hashes are MLflow tags and run-dir names, study/trial keys live in Optuna
studies, file hashes in backup manifests, checkpoint state files, lineage records
and the fingerprint cache: a change to any value below makes stored ones stale.
The expected values were computed with the code before nbexec.hashing existed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbexec.config import load_config
from nbexec.hashing import canonical_json, canonical_sha256, file_sha256, listing_sha256
from nbexec.hpo.fingerprint import data_fingerprint
from nbexec.hpo.keys import compute_study_key_hash, compute_trial_key_hash, key_hash
from nbexec.lineage.record import checkpoint_lineage, combined_sha256

SAMPLE = {
    "model": {"backbone": "tiny-encoder", "layers": 2, "blocks": {"dims": [64, 32]}},
    "training": {"learning_rate": 0.002, "batch_size": 16, "epochs": 2, "curriculum": "cosine"},
    "data": {"path": "data/ner"},
    "launch": {"nproc": 2, "backend": "gloo", "args": ["--flag", "value"], "env": {"FOO": "bar"}},
    "output": {"dir": "runs", "run_name": "sample-1"},
    "tracking": {"enabled": False, "experiment": "ner"},
}
SPACE = {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


def test_config_hashes_are_the_stored_ones() -> None:
    # Pinned: a change here changes every run's nbexec.config_hash tag and run-dir name. They last
    # changed when the trainer's defaults joined the hash (before: 77d4aef5..., 9d93bc1b..., 09e9b38e...).
    assert load_config(None).config_hash == "b07dd653da5402f0"
    assert load_config(SAMPLE).config_hash == "5b5f82e4127f47b7"
    scaled = {"launch": {"nnodes": 2, "scheduler": "slurm", "backend": "gloo"}, "tracking": {"metrics_from": "rank0"}}
    assert load_config(scaled).config_hash == "15ed8c3347c78248"


def test_the_config_hash_is_of_what_runs() -> None:
    """Spelling out the trainer's defaults, or reloading a run's config.yaml, trains the same model: same hash."""
    explicit = load_config({"training": {"learning_rate": 0.002, "epochs": 2}, "model": {"d_model": 64}})
    assert explicit.config_hash == load_config(None).config_hash
    assert load_config(load_config(SAMPLE).to_dict()).config_hash == load_config(SAMPLE).config_hash
    assert load_config({"training": {"epochs": 3}}).config_hash != load_config(None).config_hash


def test_the_config_rule_is_lenient_and_the_key_rule_strict() -> None:
    odd = {"b": [1, 2.5, None], "a": {"z": "é", "y": Path("/x")}, "n": float("nan")}
    assert canonical_json(odd, lenient=True) == '{"a":{"y":"/x","z":"\\u00e9"},"b":[1,2.5,null],"n":NaN}'
    assert canonical_sha256(odd, lenient=True)[:16] == "92b84325eab36cca"
    with pytest.raises(TypeError):
        canonical_sha256({"y": Path("/x")})
    with pytest.raises(ValueError):
        canonical_sha256({"n": float("nan")})
    plain = {"b": [1, 2.5, None], "a": {"z": "é"}}
    assert key_hash(plain) == canonical_sha256(plain) == canonical_sha256(plain, lenient=True)
    assert key_hash(plain) == "ad0f60705377e48518f218f138c3e412922ebd9815bb9d4a65efa324aac7349f"


def test_study_and_trial_keys_are_the_stored_ones() -> None:
    study = compute_study_key_hash(backbone="tiny-encoder", data_fingerprint="ab" * 32, search_space=SPACE,
                                   objective="eval_loss", direction="minimize")
    assert study == "bf0a95c72979095be77bc471812f6dd69ce98c0e95014f9870e517b7004c7fbf"
    trial = compute_trial_key_hash(study, {"training.learning_rate": 0.001})
    assert trial == "8b8682537a3043350b1ed66a77c4eb483d27cf66f5fc821745e1d6954a21b753"


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "a.c").write_bytes(b"xxx")
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"hello\n")
    (root / "big").write_bytes(bytes(range(256)) * 40000)  # 10 MB: several chunks
    (root / "e").write_bytes(b"")
    return root


def test_file_hashes_and_listings_are_the_stored_ones(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    assert file_sha256(root / "a" / "b") == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert file_sha256(root / "big") == "19d6d9faf9ce166abeb8452ff274241877eb1c09580f7ef62ff77696a6bee1fc"
    assert file_sha256(str(root / "e")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # The two listings order 'a/b' and 'a.c' differently (Path parts vs strings); both are stored.
    fingerprint = data_fingerprint(root, cache=os.devnull).sha256
    assert fingerprint == "b3c7d2b9b08e01ac7d7e8eee4f97d79f856659dd7b331951e1ccee137007a677"
    assert checkpoint_lineage(root).sha256 == "c5f5e1588009ef241b6726b8111518451389312f897d475e4ed7dad3e81cf0ac"
    files = {"a/b": "1" * 64, "a.c": "2" * 64}
    assert combined_sha256(files) == "2686fd4be081933552bd92c46a057d595ebad86854f19c4e7efdf339c3c2ac19"
    assert listing_sha256([("a.c", "2" * 64), ("a/b", "1" * 64)]) == combined_sha256(files)
