"""Tests for nbexec.config: loading, overrides, defaults, immutability, config_hash."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbexec.config import BUILTIN_TRAINER_MODULE, TrainingConfig, load_config
from nbexec.errors import ConfigError
from nbexec.trainers.token_classification.schema import resolved

TRAINER_DEFAULTS = resolved(None, None, None, place_synthetic_data=False)

# The built-in trainer's sections come back resolved (its defaults filled in): the config says what runs.
DEFAULTS: dict[str, Any] = {
    **copy.deepcopy(TRAINER_DEFAULTS),
    "launch": {
        "nproc": "auto",
        "backend": "auto",
        "entrypoint": None,
        "module": None,
        "args": [],
        "max_restarts": 0,
        "omp_num_threads": None,
        "oversubscribe": False,
        "env": {},
        "nnodes": 1,
        "node_rank": 0,
        "rdzv_endpoint": None,
        "rdzv_id": None,
        "scheduler": "local",
        "slurm": {},
        "azureml": {},
        "stall_timeout": 300.0,
        "on_stall": "warn",
        "collective_timeout": None,
    },
    "output": {"dir": "outputs", "run_name": None},
    "tracking": {"enabled": True, "uri": None, "experiment": "nbexec", "metrics_from": "parent", "required": False,
                 "timeout": 60.0},
    "backup": {"enabled": False, "target": None},
}

# One config written four ways (YAML file, JSON file, dict, YAML text) below.
SAMPLE: dict[str, Any] = {
    "model": {"backbone": "tiny-encoder", "layers": 2, "blocks": {"dims": [64, 32]}},
    "training": {"learning_rate": 0.002, "batch_size": 16, "epochs": 2, "curriculum": "cosine"},
    "data": {"path": "data/ner"},
    "launch": {"nproc": 2, "backend": "gloo", "args": ["--flag", "value"], "env": {"FOO": "bar"}},
    "output": {"dir": "runs", "run_name": "sample-1"},
    "tracking": {"enabled": False, "experiment": "ner"},
}
SAMPLE_YAML = """\
model:
  backbone: tiny-encoder
  layers: 2
  blocks:
    dims: [64, 32]
training:
  learning_rate: 0.002
  batch_size: 16
  epochs: 2
  curriculum: cosine
data: {path: data/ner}
launch:
  nproc: 2
  backend: gloo
  args: [--flag, value]
  env: {FOO: bar}
output: {dir: runs, run_name: sample-1}
tracking: {enabled: false, experiment: ner}
"""


def with_defaults(partial: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS with each section of ``partial`` laid over it (one level deep)."""
    out = copy.deepcopy(DEFAULTS)
    for section, values in partial.items():
        out[section].update(copy.deepcopy(values))
    return out


SAMPLE_RESOLVED = with_defaults(SAMPLE)


# --- loading ---------------------------------------------------------------------------


def test_none_gives_every_default() -> None:
    config = load_config(None)

    assert config.to_dict() == DEFAULTS
    assert config.launch.target_module == BUILTIN_TRAINER_MODULE
    assert load_config() == config


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_yaml_file(tmp_path: Path, suffix: str, as_path: bool) -> None:
    path = tmp_path / f"config{suffix}"
    path.write_text(SAMPLE_YAML)

    config = load_config(path if as_path else str(path))

    assert config.to_dict() == SAMPLE_RESOLVED


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SAMPLE, indent=2))

    assert load_config(path).to_dict() == SAMPLE_RESOLVED


def test_json_file_indented_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SAMPLE, indent="\t"))

    assert load_config(path).to_dict() == SAMPLE_RESOLVED


def test_dict() -> None:
    assert load_config(SAMPLE).to_dict() == SAMPLE_RESOLVED


@pytest.mark.parametrize(
    "text",
    [SAMPLE_YAML, json.dumps(SAMPLE), json.dumps(SAMPLE, indent=2)],
    ids=["yaml-cell-body", "json-one-line", "json-indented"],
)
def test_text(text: str) -> None:
    assert load_config(text).to_dict() == SAMPLE_RESOLVED


def test_one_line_yaml_text() -> None:
    config = load_config("training: {epochs: 3, batch_size: 8}")

    assert config.to_dict() == with_defaults({"training": {"epochs": 3, "batch_size": 8}})


def test_empty_file_and_empty_text_give_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert load_config(path).to_dict() == DEFAULTS
    assert load_config("\n").to_dict() == DEFAULTS


def test_existing_config_as_source() -> None:
    config = load_config(SAMPLE)

    assert load_config(config) == config


def test_nproc_given_as_digit_string_becomes_int() -> None:
    assert load_config({"launch": {"nproc": "3"}}).launch.nproc == 3


# --- overrides -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("training.learning_rate=0.00003", "training", "learning_rate", 3e-5),
        ("training.learning_rate=2.0e-5", "training", "learning_rate", 2e-5),
        ("training.learning_rate=3e-5", "training", "learning_rate", 3e-5),
        ("training.warmup=1E3", "training", "warmup", 1000.0),
        ("training.epochs=3", "training", "epochs", 3),
        ("training.curriculum=linear", "training", "curriculum", "linear"),
        ("training.amp=true", "training", "amp", True),
        ("training.amp=false", "training", "amp", False),
        ("training.max_steps=null", "training", "max_steps", None),
        ("training.max_steps=", "training", "max_steps", None),
        ("model.dims=[64, 32, 16]", "model", "dims", (64, 32, 16)),
        ("model.note=a=b", "model", "note", "a=b"),
        ("model.name=[unclosed", "model", "name", "[unclosed"),
        ("data.path='dir with spaces/x'", "data", "path", "dir with spaces/x"),
    ],
)
def test_override_value_types(override: str, section: str, key: str, expected: Any) -> None:
    config = load_config(SAMPLE, overrides=[override])

    value = getattr(config, section)[key]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("how", ["yaml-text", "json-file"])
def test_exponent_without_dot_is_a_float(tmp_path: Path, how: str) -> None:
    if how == "yaml-text":
        config = load_config("training:\n  learning_rate: 3e-5\n")
    else:
        path = tmp_path / "c.json"
        path.write_text('{"training": {"learning_rate": 3e-5}}')
        config = load_config(path)

    assert config.training["learning_rate"] == 3e-5
    assert isinstance(config.training["learning_rate"], float)


def test_override_nbexec_sections() -> None:
    config = load_config(
        SAMPLE,
        overrides=[
            "launch.nproc=4",
            "launch.args=[--lr, '3e-5', two words]",
            "tracking.enabled=true",
            "output.run_name=other",
        ],
    )

    assert config.launch.nproc == 4
    assert config.launch.args == ("--lr", "3e-5", "two words")
    assert config.tracking.enabled is True
    assert config.output.run_name == "other"


def test_override_creates_new_nested_keys_and_sections() -> None:
    config = load_config(None, overrides=["model.encoder.attention.heads=8", "data.extra.seed=1"])

    assert config.to_dict()["model"]["encoder"] == {"attention": {"heads": 8}}
    assert config.to_dict()["data"]["extra"] == {"seed": 1}


def test_later_override_wins() -> None:
    config = load_config(None, overrides=["training.epochs=1", "training.epochs=5"])

    assert config.training["epochs"] == 5


def test_override_value_is_validated_like_the_config() -> None:
    with pytest.raises(ConfigError, match="launch.nproc"):
        load_config(None, overrides=["launch.nproc=0"])


def test_override_with_all_digit_name() -> None:
    config = load_config(None, overrides=["tracking.experiment=2024", "output.run_name=20240101"])

    assert config.tracking.experiment == "2024"
    assert config.output.run_name == "20240101"


def test_callers_dict_is_not_mutated() -> None:
    source = copy.deepcopy(SAMPLE)
    before = copy.deepcopy(source)

    config = load_config(
        source,
        overrides=["training.epochs=9", "model.blocks.dims=[1]", "model.new.deep=1", "launch.env={A: b}"],
    )

    assert source == before
    # and the config holds no reference into it
    source["training"]["epochs"] = 100
    source["model"]["blocks"]["dims"].append(7)
    assert config.training["epochs"] == 9
    assert config.model["blocks"]["dims"] == (1,)


def test_with_overrides_returns_a_new_config() -> None:
    config = load_config(SAMPLE)

    changed = config.with_overrides(["training.epochs=7"])

    assert changed.training["epochs"] == 7
    assert config.training["epochs"] == 2
    assert changed.to_dict() == with_defaults({**SAMPLE, "training": {**SAMPLE["training"], "epochs": 7}})


# --- config_hash -----------------------------------------------------------------------


def reversed_keys(value: Any) -> Any:
    """The same data with every mapping's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    return value


HASH_SCRIPT = """
import json, sys
from nbexec.config import load_config
print(load_config(json.loads(sys.argv[1])).config_hash)
"""


def test_hash_is_short_hex() -> None:
    digest = load_config(SAMPLE).config_hash

    assert len(digest) == 16
    int(digest, 16)


def test_hash_ignores_key_order() -> None:
    shuffled = reversed_keys(SAMPLE)
    assert list(shuffled) != list(SAMPLE)

    assert load_config(shuffled).config_hash == load_config(SAMPLE).config_hash


def test_hash_is_the_same_in_other_processes() -> None:
    here = load_config(SAMPLE).config_hash
    elsewhere = []
    for seed, data in (("1", SAMPLE), ("2", reversed_keys(SAMPLE))):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", HASH_SCRIPT, json.dumps(data)],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )
        elsewhere.append(proc.stdout.strip())

    assert elsewhere == [here, here]


@pytest.mark.parametrize(
    "override",
    [
        "training.learning_rate=0.001",
        "training.epochs=3",
        "training.new_key=1",
        "model.blocks.dims=[64, 16]",
        "data.path=data/other",
        "launch.nproc=1",
        "launch.args=[--flag, other]",
    ],
)
def test_hash_changes_when_what_is_trained_changes(override: str) -> None:
    assert load_config(SAMPLE, overrides=[override]).config_hash != load_config(SAMPLE).config_hash


@pytest.mark.parametrize(
    "override",
    [
        "output.dir=/somewhere/else",
        "output.run_name=another-name",
        "tracking.enabled=true",
        "tracking.experiment=other",
        "tracking.uri=http://127.0.0.1:5000",
        "backup.enabled=true",
        "backup.target=/mnt/backup",
        "launch.stall_timeout=60",  # how a job is watched for hangs does not shape the model
        "launch.on_stall=cancel",
        "launch.collective_timeout=600",
    ],
)
def test_hash_ignores_where_outputs_go(override: str) -> None:
    changed = load_config(SAMPLE, overrides=[override])

    assert changed != load_config(SAMPLE)
    assert changed.config_hash == load_config(SAMPLE).config_hash


# --- round trip and immutability -------------------------------------------------------


def test_to_dict_round_trips() -> None:
    config = load_config(SAMPLE)

    data = config.to_dict()
    again = load_config(data)

    assert again == config
    assert again.config_hash == config.config_hash
    assert json.loads(json.dumps(data)) == data  # plain JSON-able data


def test_to_dict_is_a_fresh_copy() -> None:
    config = load_config(SAMPLE)

    data = config.to_dict()
    data["training"]["epochs"] = 99
    data["model"]["blocks"]["dims"].append(1)
    data["launch"]["args"].append("--more")

    assert config.to_dict() == SAMPLE_RESOLVED


def test_trainer_sections_are_read_only() -> None:
    config = load_config(SAMPLE)

    with pytest.raises(TypeError):
        config.training["epochs"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        config.model["blocks"]["dims"] = [1]  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.model["blocks"]["dims"].append(1)  # a tuple, not the caller's list
    with pytest.raises(TypeError):
        config.launch.env["FOO"] = "baz"  # type: ignore[index]
    assert config.training["epochs"] == 2
    assert config.launch.env["FOO"] == "bar"


@pytest.mark.parametrize("section", ["launch", "output", "tracking", "backup"])
def test_nbexec_sections_are_frozen(section: str) -> None:
    config = load_config(SAMPLE)
    target = getattr(config, section)
    name = dataclasses.fields(target)[0].name

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(target, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training = {}  # type: ignore[misc]
    assert isinstance(config, TrainingConfig)


# --- choices and the scheduler boundary ---------------------------------------------------


def test_choices_are_enums_that_read_and_write_as_plain_text() -> None:
    import yaml

    from nbexec.config import Backend, LaunchConfig, MetricsFrom, Scheduler

    config = load_config({"launch": {"scheduler": "slurm", "backend": "gloo"}, "tracking": {"metrics_from": "rank0"}})
    assert config.launch.scheduler is Scheduler.SLURM and config.launch.scheduler == "slurm"
    assert config.launch.backend is Backend.GLOO and f"{config.launch.backend}" == "gloo"
    assert config.tracking.metrics_from is MetricsFrom.RANK0 and str(config.tracking.metrics_from) == "rank0"
    data = config.to_dict()
    choices = (data["launch"]["scheduler"], data["launch"]["backend"], data["tracking"]["metrics_from"])
    assert choices == ("slurm", "gloo", "rank0") and {type(c) for c in choices} == {str}
    assert load_config(yaml.safe_load(yaml.safe_dump(data))) == config  # the safe dumper takes no Enum
    assert LaunchConfig(scheduler="azureml").scheduler is Scheduler.AZUREML  # text given directly


@pytest.mark.parametrize(("override", "words"), [
    ("launch.scheduler=slrum", ("launch.scheduler = 'slrum'", "allowed: local, slurm, azureml",
                                "did you mean 'slurm'", "launch.backend is torch.distributed's")),
    ("launch.backend=glo", ("launch.backend = 'glo'", "allowed: auto, gloo, nccl", "did you mean 'gloo'")),
    ("tracking.metrics_from=rank1", ("allowed: parent, rank0", "did you mean 'rank0'")),
    ("launch.slurm=gpu", ("launch.slurm = 'gpu'", "use a mapping")),
    ("launch.on_stall=kill", ("launch.on_stall = 'kill'", "allowed: warn, cancel")),
    ("launch.stall_timeout=-1", ("launch.stall_timeout = -1", "seconds between 0 and", "0 turns stall detection off")),
    ("launch.stall_timeout=5m", ("launch.stall_timeout = '5m'", "e.g. 300 for 5 min")),
    ("launch.collective_timeout=0", ("launch.collective_timeout = 0", "between 1 and", "or null for torch's default")),
])
def test_bad_choices_name_what_is_allowed(override: str, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides=[override])
    for word in words:
        assert word in str(caught.value)


def test_hang_settings_default_to_a_5_minute_warning_and_torchs_collective_timeout() -> None:
    from nbexec.config import OnStall

    launch = load_config(None).launch
    assert (launch.stall_timeout, launch.on_stall, launch.collective_timeout) == (300.0, OnStall.WARN, None)
    assert load_config(None, overrides=["launch.on_stall=cancel"]).to_dict()["launch"]["on_stall"] == "cancel"


def test_config_imports_nothing_from_the_schedulers() -> None:
    """Not at the top and not inside a function: the schedulers import the config, not the reverse."""
    import ast

    import nbexec.config
    import nbexec.config_fields

    for module in (nbexec.config, nbexec.config_fields):
        tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert imported and not [m for m in imported if m.startswith("nbexec.schedulers")], module.__name__
    code = ("import sys\nfrom nbexec.config import load_config\n"
            "load_config({'launch': {'scheduler': 'slurm', 'nnodes': 2, 'slurm': {'partition': 'gpu'}}})\n"
            "print(sorted(m for m in sys.modules if m.startswith('nbexec.schedulers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_scheduler_nobody_registered_is_refused_before_anything_runs(tmp_path) -> None:
    # a name that is no typo of a built-in one may be a plugin's: the registry says, when the job is planned
    from nbexec.executor import prepare

    with pytest.raises(ConfigError) as caught:
        prepare(None, overrides=["launch.scheduler=kubernetes"], output_dir=tmp_path)
    text = str(caught.value)
    for words in ("launch.scheduler = 'kubernetes'", "allowed: local, slurm, azureml",
                  "launch.backend is torch.distributed's"):
        assert words in text, text
    assert not any(tmp_path.iterdir())


def test_the_shipped_example_config_is_the_defaults() -> None:
    """docs/config.yaml says 'the defaults shown': it must train exactly what no config trains."""
    example = Path(__file__).resolve().parents[2] / "docs" / "config.yaml"

    config = load_config(example)

    assert config.config_hash == load_config(None).config_hash
    assert config.to_dict() == load_config(None).to_dict()
