"""Fixtures for tracking tests: real MLflow SQLite stores, configs with a secret, finished run dirs."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbexec.config import TrainingConfig, load_config
from nbexec.errors import RootCause
from nbexec.events import EventWriter
from nbexec.plan import LaunchPlan, plan_training
from nbexec.result import RunStatus, TrainingResult
from nbexec.runner.handle import write_run_inputs
from nbexec.tracking.store import reset_setup

SECRET = "hf_TOPSECRETvalue0123456789"  # training.hf_token in the config
ENV_SECRET = "mlflow-pw-SECRET-987654321"  # MLFLOW_TRACKING_PASSWORD in the environment

MLFLOW_VARS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "NBEXEC_NOTEBOOK_PATH",
    "JPY_SESSION_NAME",
)


@pytest.fixture(autouse=True)
def isolated_tracking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No MLflow variables from the host, a fresh project dir, no earlier setup_mlflow."""
    for name in MLFLOW_VARS:
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    reset_setup()
    yield
    reset_setup()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store; tests copy it (migrating one costs ~5 s)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def make_store(template_db: Path, tmp_path: Path) -> Callable[[str], str]:
    """``make_store("a")``: the URI of a fresh real SQLite store in ``tmp_path/a/``."""

    def make(name: str = "store") -> str:
        db = tmp_path / name / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, db)
        return f"sqlite:///{db}"

    return make


@pytest.fixture
def store_uri(make_store: Callable[[str], str]) -> str:
    return make_store("store")


@pytest.fixture
def client(store_uri: str):  # noqa: ANN201 - MlflowClient, imported lazily
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri)


@pytest.fixture
def config() -> TrainingConfig:
    """A small reference-trainer config holding a secret (training.hf_token)."""
    return load_config(
        {
            "model": {"backbone": "tiny-encoder", "d_model": 32, "heads": 4},
            "training": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 8, "hf_token": SECRET},
            "data": {"num_train": 64, "num_val": 16},
            "launch": {"nproc": 2, "args": ["--api-key", SECRET]},
            "tracking": {"experiment": "tests"},
        }
    )


@pytest.fixture
def plan(config: TrainingConfig, tmp_path: Path, machine: Callable[..., object]) -> LaunchPlan:
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_PASSWORD": ENV_SECRET, "OMP_NUM_THREADS": "1"}
    return plan_training(
        config, output_dir=tmp_path / "outputs", run_name="job-1", hardware=machine(cpus=2), base_env=env
    )


def free_port() -> int:
    """A port nothing listens on (bound, read and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def finished_run_dir(
    plan: LaunchPlan,
    status: RunStatus = RunStatus.FINISHED,
    *,
    steps: int = 5,
    root_cause: RootCause | None = None,
) -> TrainingResult:
    """Lay out a run dir as a finished job leaves it and return its TrainingResult.

    config.yaml and command.txt come from nbexec's own writer; rank logs hold
    a line in which the training script printed the secret; events.jsonl
    holds ``steps`` metric events (loss, lr) plus progress events.
    """
    write_run_inputs(plan)
    logs = plan.log_dir
    (logs / "rank0.log").write_text(f"step 0\nusing token {SECRET} and password {ENV_SECRET}\ndone\n")
    (logs / "rank1.log").write_text("rank 1 says hello\n")
    writer = EventWriter(plan.events_path, rank=0)
    t0 = time.time() - steps
    for step in range(steps):
        writer.emit("progress", step=step, total=steps)
        writer.emit("metrics", step=step * 10, metrics={"loss": 1.0 / (step + 1), "lr": 0.001})
    writer.emit("metrics", step=steps * 10, metrics={"eval/f1": 0.5})
    writer.close()
    return TrainingResult(
        run_name=plan.run_name,
        run_dir=plan.run_dir,
        status=status,
        exit_code={RunStatus.FINISHED: 0, RunStatus.FAILED: 1, RunStatus.KILLED: -15}[status],
        started_at=t0,
        ended_at=time.time(),
        nproc=plan.nproc,
        backend=plan.backend,
        config_hash=plan.config.config_hash,
        command=plan.argv,
        metrics={"loss": 1.0 / steps, "lr": 0.001, "eval/f1": 0.5},
        root_cause=root_cause,
        log_paths={"rank0": logs / "rank0.log", "rank1": logs / "rank1.log"},
    )


@pytest.fixture
def log_batch_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, int]]:
    """Record each real ``MlflowClient.log_batch`` call (sizes only); the call still goes through."""
    from mlflow.tracking import MlflowClient

    calls: list[dict[str, int]] = []
    real = MlflowClient.log_batch

    def counting(self, run_id, metrics=(), params=(), tags=(), *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append({"metrics": len(metrics or ()), "params": len(params or ()), "tags": len(tags or ())})
        return real(self, run_id, metrics, params, tags, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    return calls


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:  # noqa: ANN001
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def stored_text(client, run_id: str) -> str:  # noqa: ANN001 - MlflowClient
    """Everything MLflow stored for a run, as one string: info, params, tags, metrics, artifact files."""
    from urllib.parse import urlparse

    run = client.get_run(run_id)
    parts = [repr(run.info), repr(run.data.params), repr(run.data.tags), repr(run.data.metrics)]
    root = Path(urlparse(run.info.artifact_uri).path)
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file():
                parts.append(f"{path}: {path.read_bytes().decode(errors='replace')}")
    return "\n".join(parts)
