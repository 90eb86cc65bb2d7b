"""Tags: what ran, the git commit and dirty flag, the notebook, and never a secret."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from nbexec.config import TrainingConfig, load_config
from nbexec.plan import LaunchPlan
from nbexec.redact import REDACTED
from nbexec.tracking import add_training_tags, build_training_tags, create_training_mlflow_run
from nbexec.tracking.tags import git_tags, source_tags

from .conftest import ENV_SECRET, SECRET


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True, check=True, timeout=30,
    )
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit of train.py."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_git_commit_and_dirty_flag(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    assert git_tags() == {"mlflow.source.git.commit": commit, "nbexec.git_commit": commit, "nbexec.git_dirty": "false"}
    (repo / "outputs").mkdir()
    (repo / "outputs" / "mlflow.db").write_text("untracked files do not make the code dirty")
    assert git_tags()["nbexec.git_dirty"] == "false"
    (repo / "train.py").write_text("print('changed')\n")
    assert git_tags()["nbexec.git_dirty"] == "true"
    assert git_tags(repo / "outputs")["nbexec.git_commit"] == commit  # any folder inside the repo


def test_no_git_tags_outside_a_repository(tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_tags(outside) == {}
    assert not any("git" in k for k in build_training_tags(cwd=outside))


def test_what_ran(config: TrainingConfig, plan: LaunchPlan, tmp_path: Path) -> None:
    tags = build_training_tags(config=config, plan=plan, cwd=tmp_path)
    assert tags["nbexec.version"] == metadata.version("nbexec")
    assert tags["nbexec.config_hash"] == config.config_hash
    assert tags["nbexec.world_size"] == "2"
    assert tags["nbexec.backend"] == "gloo"
    assert tags["nbexec.hardware"] == plan.hardware.summary()
    assert tags["nbexec.torch_version"] == metadata.version("torch")
    assert tags["nbexec.run_dir"] == str(plan.run_dir)
    assert tags["nbexec.entrypoint"] == "-m nbexec.trainers.token_classification"
    command = shlex.split(tags["nbexec.command"])
    assert command[:3] == list(plan.argv[:3])
    assert command[-2:] == ["--api-key", REDACTED]
    # MLflow's "Source" column: the script the ranks ran (here the built-in trainer's module)
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("nbexec.trainers.token_classification", "LOCAL")


def test_the_source_is_a_script_or_a_module_outside_a_notebook(tmp_path: Path) -> None:
    script = load_config({"launch": {"entrypoint": "scripts/train.py"}})
    module = load_config({"launch": {"module": "mypkg.fine_tune"}})
    assert source_tags(script) == {"mlflow.source.name": "scripts/train.py", "mlflow.source.type": "LOCAL"}
    assert source_tags(module) == {"mlflow.source.name": "mypkg.fine_tune", "mlflow.source.type": "LOCAL"}
    assert source_tags() == {}  # nothing known: no made-up source


def test_notebook_path_from_env_or_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = load_config({"launch": {"entrypoint": "scripts/train.py"}})
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/from-jupyter.ipynb")  # what Jupyter Server gives a kernel
    tags = build_training_tags(config=script, cwd=tmp_path)
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("/home/me/from-jupyter.ipynb", "NOTEBOOK")
    monkeypatch.setenv("NBEXEC_NOTEBOOK_PATH", "/home/me/ner.ipynb")
    tags = build_training_tags(config=script, cwd=tmp_path)
    assert tags["mlflow.source.name"] == "/home/me/ner.ipynb"
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert build_training_tags(notebook_path="other.ipynb", cwd=tmp_path)["mlflow.source.name"] == "other.ipynb"


def test_no_secret_in_any_tag(config: TrainingConfig, plan: LaunchPlan, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ENV_SECRET)
    extra = {"hub_token": SECRET, "note": f"trained with {SECRET}", "owner": "me"}
    tags = build_training_tags(config=config, plan=plan, extra=extra, cwd=tmp_path)
    assert tags["hub_token"] == REDACTED
    assert tags["note"] == f"trained with {REDACTED}"
    assert tags["owner"] == "me"
    text = json.dumps(tags)
    assert SECRET not in text and ENV_SECRET not in text


def test_add_training_tags_sets_them_on_the_run(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                                                plan: LaunchPlan, repo: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tracked = create_training_mlflow_run(config, plan=plan, tracking_uri=store_uri)
    monkeypatch.chdir(repo)
    sent = add_training_tags(tracked.run_id, config=config, plan=plan, extra={"stage": "final"})
    stored = client.get_run(tracked.run_id).data.tags
    assert {k: stored[k] for k in sent} == sent
    assert stored["stage"] == "final"
    assert stored["mlflow.source.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert SECRET not in json.dumps(stored)


def test_tags_do_not_import_torch_or_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from nbexec.config import load_config\n"
        "from nbexec.tracking import build_training_tags\n"
        "tags = build_training_tags(config=load_config({}))\n"
        "assert tags['nbexec.torch_version']\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
