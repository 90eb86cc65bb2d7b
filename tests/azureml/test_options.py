"""launch.azureml as AzureMLOptions: typed, checked with the field, the value and the fix, refused before launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbexec.config import load_config
from nbexec.errors import ConfigError
from nbexec.executor import prepare
from nbexec.schedulers.azureml.options import AzureMLOptions, azureml_options


def test_options_are_typed_values() -> None:
    config = load_config({"launch": {"scheduler": "azureml", "azureml": {
        "compute": "gpu-cluster", "gpus_per_node": 8, "experiment": 2024, "code": "src", "workspace": None}}})
    assert azureml_options(config) == AzureMLOptions(compute="gpu-cluster", gpus_per_node=8, experiment="2024",
                                                     code="src")
    assert AzureMLOptions.from_config(None) == AzureMLOptions()


@pytest.mark.parametrize(("raw", "message"), [
    ({"compute": ""}, "launch.azureml.compute = '' is not allowed; use the name of an AzureML compute cluster"),
    ({"cmpute": "x"}, "launch.azureml.cmpute = 'x' is not allowed; unknown key (did you mean 'compute'?); allowed: "
                      "compute, environment, instance_type, gpus_per_node, experiment, display_name, "
                      "subscription_id, resource_group, workspace, code"),
    ({"experiment": "a b"}, "launch.azureml.experiment = 'a b' is not allowed; use 1-128 letters, digits, '.', '_' "
                            "or '-', starting with a letter or digit (it becomes a directory name)"),
    ({"code": "a\nb"}, "launch.azureml.code = 'a\\nb' is not allowed; use a directory path"),
    ({"gpus_per_node": -1}, "launch.azureml.gpus_per_node = -1 is not allowed; use an integer between 0 and 64"),
])
def test_bad_options_say_the_field_the_value_and_what_is_allowed(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AzureMLOptions.from_config(raw)
    assert str(caught.value) == message
    assert caught.value.field == message.split(" = ")[0]


def test_prepare_refuses_bad_options_before_anything_is_written(tmp_path: Path) -> None:
    raw = {"launch": {"scheduler": "azureml", "azureml": {"compute": "gpu cluster"}},
           "output": {"dir": str(tmp_path / "out")}}
    with pytest.raises(ConfigError, match="launch.azureml.compute = 'gpu cluster'"):
        prepare(raw)
    assert not (tmp_path / "out").exists()
