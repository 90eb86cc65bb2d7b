"""The parent -> child contract: environment variable names and run-dir layout.

The parent (launcher) and the child (``nbexec.child``, the worker bootstrap,
the reference trainer) agree only on these names. Nothing else crosses over.
"""

from __future__ import annotations

from pathlib import Path

ENV_RUN_DIR = "NBEXEC_RUN_DIR"  # <output_dir>/<run_name>
ENV_RUN_NAME = "NBEXEC_RUN_NAME"
ENV_CONFIG = "NBEXEC_CONFIG"  # resolved config.yaml
ENV_EVENTS = "NBEXEC_EVENTS"  # events.jsonl
ENV_CONFIG_SECRETS = "NBEXEC_CONFIG_SECRETS"  # JSON {dotted.key: value} kept out of config.yaml
ENV_CHECKPOINT_DIR = "NBEXEC_CHECKPOINT_DIR"
ENV_LOG_SOCKET = "NBEXEC_LOG_SOCKET"  # unix stream socket behind a rank's fds 1 and 2
ENV_LOG_PACKETS = "NBEXEC_LOG_PACKETS"  # unix packet socket for a rank's Python-level stdout/stderr
ENV_TRACKING_FILE = "NBEXEC_TRACKING_FILE"  # tracking.json: ranks wait for it, then join the MLflow run
ENV_JOB_RUN_ID = "NBEXEC_MLFLOW_RUN_ID"  # the job's MLflow run in a rank (MLflow deletes MLFLOW_RUN_ID once used)
ENV_RESUME_FROM = "NBEXEC_RESUME_FROM"  # checkpoint dir to resume from, if any
ENV_BACKEND = "NBEXEC_BACKEND"  # resolved process-group backend: gloo or nccl
ENV_EVENTS_ALL_RANKS = "NBEXEC_EVENTS_ALL_RANKS"  # "1": every rank reports events

CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
LINEAGE_FILE = "lineage.json"
TRACKING_FILE = "tracking.json"  # the job's MLflow run (uri, experiment, run id), written once it is open
CHECKPOINT_DIR = "checkpoint"
LOG_DIR = "logs"
LAUNCHER_LOG = "launcher.log"
DEFAULT_STUDY_PATH = "outputs/hpo/study.db"  # the Optuna study nbexec hpo uses unless told


def rank_log_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.log``: whole lines of one rank, stdout and stderr."""
    return run_dir / LOG_DIR / f"rank{rank}.log"


def rank_error_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.error.json``: the exception that ended a rank, if any."""
    return run_dir / LOG_DIR / f"rank{rank}.error.json"
