"""Tests for nbexec.redact: which names are secret, env redaction, split/merge of config secrets."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from nbexec.redact import REDACTED, is_secret_name, merge_secrets, redact_env, split_secrets


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN", "hf_token", "api_key", "API_KEY", "WANDB_API_KEY", "AZURE_CLIENT_SECRET",
        "client_secret", "DB_PASSWORD", "password", "passwd", "GOOGLE_APPLICATION_CREDENTIALS",
        "aws_secret_access_key", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
        "NBEXEC_CONFIG_SECRETS", "AccessToken",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "KEYBOARD", "keyboard", "MONKEY", "KEY_HASH", "study_key_hash", "TRIAL_KEY_HASH",
        "learning_rate", "batch_size", "PATH", "HOME", "CUDA_VISIBLE_DEVICES", "MLFLOW_TRACKING_URI",
        "OMP_NUM_THREADS", "backbone", "subtoken_labels", "tokenizer", "max_tokens", "",
    ],
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_env() -> None:
    env = {"PATH": "/usr/bin", "HF_TOKEN": "hf_abc", "MLFLOW_TRACKING_PASSWORD": "pw", "RANK": "0"}
    before = dict(env)

    out = redact_env(env)

    assert out == {"PATH": "/usr/bin", "HF_TOKEN": REDACTED, "MLFLOW_TRACKING_PASSWORD": REDACTED, "RANK": "0"}
    assert env == before
    assert out is not env


CONFIG: dict[str, Any] = {
    "model": {"backbone": "tiny-encoder", "hub": {"token": "hf_abc", "repo": "me/model"}},
    "training": {"learning_rate": 0.001, "api_key": "k-123", "passwords": ["a", "b"]},
    "launch": {"env": {"WANDB_API_KEY": "w-456", "NCCL_DEBUG": "INFO"}},
    "tracking": {"token": None},
    "credentials": {"user": "me", "secret": "s-789"},
}


def test_split_secrets() -> None:
    before = copy.deepcopy(CONFIG)

    clean, secrets = split_secrets(CONFIG)

    assert secrets == {
        "model.hub.token": "hf_abc",
        "training.api_key": "k-123",
        "training.passwords": ["a", "b"],
        "launch.env.WANDB_API_KEY": "w-456",
        "credentials.secret": "s-789",
    }
    assert clean == {
        "model": {"backbone": "tiny-encoder", "hub": {"token": REDACTED, "repo": "me/model"}},
        "training": {"learning_rate": 0.001, "api_key": REDACTED, "passwords": REDACTED},
        "launch": {"env": {"WANDB_API_KEY": REDACTED, "NCCL_DEBUG": "INFO"}},
        "tracking": {"token": None},
        "credentials": {"user": "me", "secret": REDACTED},
    }
    assert CONFIG == before


def test_merge_restores_the_original() -> None:
    clean, secrets = split_secrets(CONFIG)

    # as the child gets them: the file's data and the secrets through a JSON env var
    merged = merge_secrets(copy.deepcopy(clean), json.loads(json.dumps(secrets)))

    assert merged == CONFIG


def test_merge_is_in_place_and_creates_missing_sections() -> None:
    data: dict[str, Any] = {"model": {}}

    out = merge_secrets(data, {"model.hub.token": "t", "training.api_key": "k"})

    assert out is data
    assert data == {"model": {"hub": {"token": "t"}}, "training": {"api_key": "k"}}


def test_nothing_secret_splits_to_nothing() -> None:
    data = {"training": {"learning_rate": 0.1}, "data": {"path": "x"}}

    clean, secrets = split_secrets(data)

    assert (clean, secrets) == (data, {})
    assert merge_secrets(copy.deepcopy(clean), secrets) == data


def test_round_trip_with_dotted_keys() -> None:
    data = {"model": {"hub.v2": {"token": "t-1"}}}
    clean, secrets = split_secrets(data)

    assert merge_secrets(copy.deepcopy(clean), secrets) == data
