"""The parent -> child contract: environment variable names and run-dir layout.

The parent (launcher) and the child (``nbexec.child``, the worker bootstrap,
the reference trainer) agree only on these names. Nothing else crosses over.
"""

from __future__ import annotations

import re
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
ENV_CHILD_METRICS = "NBEXEC_MLFLOW_CHILD_METRICS"  # "0": the parent logs metrics from events; rank 0 must not too
ENV_PROGRESS_ALL_RANKS = "NBEXEC_PROGRESS_ALL_RANKS"  # "1": every rank reports progress (stall detection reads it)
ENV_COLLECTIVE_TIMEOUT = "NBEXEC_COLLECTIVE_TIMEOUT"  # seconds: the process group's timeout (launch.collective_timeout)
ENV_STACKS = "NBEXEC_STACKS"  # "0": the bootstrap installs no stack-dump hook

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


STACKS_FILE_PREFIX = "stacks-"  # logs/stacks-<time>.txt: the stacks of every rank, taken together
RANK_PROCESS_GLOB = "rank*.process.json"  # every rank's process record in LOG_DIR
RANK_LOG_GLOB = "rank*.log"  # every rank's log in LOG_DIR (see rank_of_log_name)
RANK_ERROR_GLOB = "rank*.error.json"  # every rank's error record in LOG_DIR
_RANK_LOG_RE = re.compile(r"^rank(\d+)\.log$")


def rank_log_name(rank: int) -> str:
    """``rank<N>.log``, the file name of one rank's log in :data:`LOG_DIR`."""
    return f"rank{rank}.log"


def rank_of_log_name(name: str) -> int | None:
    """The rank whose log ``name`` is (``rank3.log`` -> 3), or None for another file."""
    match = _RANK_LOG_RE.match(name)
    return int(match.group(1)) if match else None


def rank_log_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.log``: whole lines of one rank, stdout and stderr."""
    return run_dir / LOG_DIR / rank_log_name(rank)


def rank_error_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.error.json``: the exception that ended a rank, if any."""
    return run_dir / LOG_DIR / f"rank{rank}.error.json"


def rank_process_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.process.json``: the rank's pid, host and how to ask it for its stacks.

    Written by the worker bootstrap once its stack-dump hook is installed (see
    :mod:`nbexec.stacks.request`), so a process that has one never gets the signal.
    """
    return run_dir / LOG_DIR / f"rank{rank}.process.json"


def rank_stacks_path(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.stacks``: every stack dump the rank wrote, each after its request's marker line."""
    return run_dir / LOG_DIR / f"rank{rank}.stacks"
