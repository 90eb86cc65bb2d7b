"""MetricsLogger (child side): batched log_batch calls from a thread; a broken store never stops training."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from nbexec.config import TrainingConfig
from nbexec.tracking import MetricsLogger, TrackingWarning, create_training_mlflow_run

from .conftest import free_port, history


def test_values_are_batched(store_uri: str, client, config: TrainingConfig,  # noqa: ANN001
                            log_batch_calls: list[dict[str, int]]) -> None:
    tracked = create_training_mlflow_run(config, run_name="child", tracking_uri=store_uri)
    log_batch_calls.clear()
    logger = MetricsLogger(tracked.run_id, tracking_uri=store_uri)
    steps, per_step = 300, 10
    for step in range(steps):
        logger.log({f"m{i}": step + i / 10 for i in range(per_step)}, step=step)
    logger.close()

    total = steps * per_step
    assert logger.logged == total and logger.failed == 0 and logger.dropped == 0
    assert sum(c["metrics"] for c in log_batch_calls) == total
    assert len(log_batch_calls) == logger.calls <= total // 500 + 3  # 3,000 values in a handful of calls
    assert all(c["metrics"] <= 500 for c in log_batch_calls)
    assert history(client, tracked.run_id, "m3") == [(s, s + 0.3) for s in range(steps)]
    assert client.get_run(tracked.run_id).data.tags["nbexec.child_logged"] == "true"


def test_values_without_steps_count_per_metric(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    tracked = create_training_mlflow_run(config, run_name="child", tracking_uri=store_uri)
    with MetricsLogger(tracked.run_id, tracking_uri=store_uri) as logger:
        for i in range(3):
            logger.log({"loss": float(i)})
        logger.log({"acc": 0.5})
        logger.log({"bad": "not a number"})
    assert history(client, tracked.run_id, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert history(client, tracked.run_id, "acc") == [(0, 0.5)]
    assert client.get_metric_history(tracked.run_id, "bad") == []


def test_a_slow_trickle_is_flushed_by_time(store_uri: str, client, config: TrainingConfig) -> None:  # noqa: ANN001
    tracked = create_training_mlflow_run(config, run_name="child", tracking_uri=store_uri)
    logger = MetricsLogger(tracked.run_id, tracking_uri=store_uri, flush_interval_s=0.05)
    logger.log({"loss": 1.0}, step=1)
    deadline = time.monotonic() + 120  # guards a hang only
    while not client.get_metric_history(tracked.run_id, "loss") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert history(client, tracked.run_id, "loss") == [(1, 1.0)]  # sent before close()
    logger.close()


@pytest.mark.parametrize("broken", ["sqlite-under-a-file", "closed-port"])
def test_a_broken_store_is_survived(broken: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if broken == "closed-port":
        uri = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as setup_mlflow_tracking_env sets for children
    else:
        (tmp_path / "file").write_text("not a directory")
        uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = MetricsLogger("0123456789abcdef0123456789abcdef", tracking_uri=uri, flush_interval_s=0.05)
        for step in range(1200):
            logger.log({"loss": 1.0, "lr": 0.1}, step=step)
        logger.close(timeout=60)
    assert logger.logged == 0
    assert logger.failed == 2400
    store_warnings = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(store_warnings) == 1, [str(w.message) for w in store_warnings]
    assert "training goes on" in str(store_warnings[0].message)


def test_from_env_only_on_rank_0_with_a_run() -> None:
    assert MetricsLogger.from_env({"RANK": "1", "MLFLOW_RUN_ID": "abc"}) is None
    assert MetricsLogger.from_env({"RANK": "0"}) is None
    logger = MetricsLogger.from_env({"RANK": "0", "MLFLOW_RUN_ID": "abc", "MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    assert logger is not None and logger.run_id == "abc" and logger.tracking_uri == "sqlite:///x.db"
    logger.close()
    assert not logger.enabled
    logger.close()  # idempotent


def test_without_a_run_it_does_nothing() -> None:
    logger = MetricsLogger()
    assert not logger.enabled
    logger.log({"loss": 1.0})
    logger.close()
    assert logger.calls == 0
