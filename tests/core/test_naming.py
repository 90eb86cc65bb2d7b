"""The naming policy: naming.yaml in the config dir, the fallback, trusted vs inferred config_dir, collisions."""

from __future__ import annotations

import re
import time

import pytest

from nbexec.config import NAME_RE, load_config
from nbexec.naming import build_training_run_name_with_fallback as name_for

NOW = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
FALLBACK = r"20260304-050607-tiny-encoder-[0-9a-f]{6}"  # what differs between runs first


def policy(directory, pattern):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "naming.yaml").write_text(f"run_name: {pattern!r}\n")
    return directory


def test_policy_in_the_given_config_dir_is_used(tmp_path):
    config = load_config({"model": {"backbone": "tiny-encoder"}, "training": {"learning_rate": 0.003}})
    d = policy(tmp_path / "cfg", "{backbone}-{stage}-lr{training.learning_rate}-{date}")
    assert name_for(config, stage="final", config_dir=d, now=NOW) == "tiny-encoder-final-lr0.003-20260304"


def test_missing_policy_falls_back_to_the_built_in_pattern(tmp_path):
    assert re.fullmatch(FALLBACK, name_for(load_config(None), config_dir=tmp_path, now=NOW))


def test_unknown_field_in_policy_falls_back(tmp_path):
    d = policy(tmp_path, "{backbone}-{no_such_field}")
    assert re.fullmatch(FALLBACK, name_for(load_config(None), config_dir=d, now=NOW))
    d = policy(tmp_path, "{backbone}-{training.no_such_key}")
    assert re.fullmatch(FALLBACK, name_for(load_config(None), config_dir=d, now=NOW))


def test_given_config_dir_is_trusted_and_only_none_is_inferred(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy(tmp_path / "config", "inferred-{stage}")
    given = policy(tmp_path / "elsewhere", "given-{stage}")
    empty = tmp_path / "empty"
    empty.mkdir()
    config = load_config(None)
    assert name_for(config) == "inferred-train"  # None: ./config is looked at
    assert name_for(config, config_dir=given) == "given-train"
    # a given dir without a policy is not second-guessed by looking at ./config
    assert re.fullmatch(FALLBACK, name_for(config, config_dir=empty, now=NOW))


def test_collisions_get_a_numbered_suffix(tmp_path):
    d = policy(tmp_path, "{backbone}-{stage}")
    used = {"tiny-encoder-train", "tiny-encoder-train-2"}
    assert name_for(load_config(None), config_dir=d, taken=used.__contains__) == "tiny-encoder-train-3"


@pytest.mark.parametrize("pattern", ["../{backbone}", "a/b/{stage}", "..{stage}..", "{stage} with spaces;rm"])
def test_names_are_always_safe_directory_names(tmp_path, pattern):
    name = name_for(load_config(None), config_dir=policy(tmp_path, pattern), now=NOW)
    assert NAME_RE.match(name) and "/" not in name and ".." not in name, name


def test_explicit_run_name_wins_over_policy(tmp_path):
    d = policy(tmp_path, "{backbone}")
    assert name_for(load_config({"output": {"run_name": "mine"}}), config_dir=d) == "mine"


def test_plan_uses_the_policy_and_avoids_existing_run_dirs(tmp_path, monkeypatch, machine):
    from nbexec.plan import plan_training

    monkeypatch.chdir(tmp_path)
    policy(tmp_path / "config", "{backbone}-{stage}")
    (tmp_path / "out" / "tiny-encoder-train").mkdir(parents=True)
    plan = plan_training(load_config(None), output_dir=tmp_path / "out", hardware=machine())
    assert plan.run_name == "tiny-encoder-train-2"
