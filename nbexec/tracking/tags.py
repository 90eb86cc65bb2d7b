"""Every tag nbexec puts on an MLflow run, in one place.

What ran (version, config hash, command, world size, backend, hardware, torch,
git commit and dirty flag, the source: notebook or script), and how it ended (status, exit code,
failing rank and root cause, duration, checkpoint). No value may carry a
secret: names are redacted through :mod:`nbexec.redact`, known secret values
are scrubbed from the text.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from nbexec.redact import REDACTED, Scrubber, is_secret_name, redact_argv
from nbexec.tracking.batching import MAX_TAG_VALUE, log_batch_chunked, mlflow_key, truncate

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.plan import LaunchPlan
    from nbexec.result import TrainingResult

ENV_NOTEBOOK_PATH = "NBEXEC_NOTEBOOK_PATH"
ENV_JUPYTER_SESSION = "JPY_SESSION_NAME"  # set by Jupyter Server in a kernel: the notebook's path
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_CHILD_LOGGED = "nbexec.child_logged"  # set by the child's MetricsLogger once it has logged
TAG_FAILURE = "nbexec.failure"
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
GIT_TIMEOUT_S = 5.0


def build_training_tags(
    *,
    config: TrainingConfig | None = None,
    plan: LaunchPlan | None = None,
    result: TrainingResult | None = None,
    extra: Mapping[str, object] | None = None,
    notebook_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    scrubber: Scrubber | None = None,
) -> dict[str, str]:
    """The tags for a training run, as a dict (nothing is sent).

    Args:
        config: the run's config (hash, entrypoint).
        plan: the launch plan (command, world size, backend, hardware, run dir).
        result: the outcome, when the job has ended (status, exit code, failure...).
        extra: more tags; values under secret names are redacted.
        notebook_path: the notebook that launched the run (default: see :func:`source_tags`).
        cwd: where to look for a git repository (default: the current directory).
        scrubber: secret values to remove (default: from the config and environment).

    Returns:
        ``{tag: value}`` with every value a string within MLflow's limit.
    """
    from nbexec.version import __version__

    tags: dict[str, object] = {"nbexec.version": __version__}
    if config is not None:
        tags["nbexec.config_hash"] = config.config_hash
        launch = config.launch
        if launch.entrypoint:
            tags["nbexec.entrypoint"] = launch.entrypoint
        elif launch.target_module:
            tags["nbexec.entrypoint"] = f"-m {launch.target_module}"
    if plan is not None:
        tags.update(
            {
                "nbexec.run_name": plan.run_name,
                "nbexec.run_dir": str(plan.run_dir),
                "nbexec.command": shlex.join(redact_argv(plan.argv)),
                "nbexec.world_size": plan.nproc,
                "nbexec.backend": plan.backend,
                "nbexec.hardware": plan.hardware.summary(),
            }
        )
        if plan.resume_from is not None:  # lineage: this run continues that checkpoint
            tags["nbexec.resumed_from"] = str(plan.resume_from)
    torch_version = _package_version("torch")
    if torch_version:
        tags["nbexec.torch_version"] = torch_version
    user = _user()
    if user:
        tags["mlflow.user"] = user
    tags.update(git_tags(cwd))
    tags.update(source_tags(config, notebook_path))
    if result is not None:
        tags.update(result_tags(result))
    for key, value in (extra or {}).items():
        tags[key] = REDACTED if is_secret_name(str(key)) else value
    if scrubber is None:
        scrubber = Scrubber.from_sources(config.to_dict() if config is not None else None)
    return {mlflow_key(k): truncate(scrubber.text(str(v)), MAX_TAG_VALUE) for k, v in tags.items() if v is not None}


def source_tags(
    config: TrainingConfig | None = None, notebook_path: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """What MLflow's "Source" column shows: the notebook that launched the run, else the script it ran.

    The notebook is ``notebook_path``, else ``$NBEXEC_NOTEBOOK_PATH``, else
    ``$JPY_SESSION_NAME`` (Jupyter Server sets it in the kernels it starts to
    the notebook's path); its type is ``NOTEBOOK``. Otherwise the run's
    entrypoint (a script path, or a module such as the built-in trainer's) with
    type ``LOCAL``. {} when neither is known.
    """
    notebook = notebook_path or os.environ.get(ENV_NOTEBOOK_PATH) or os.environ.get(ENV_JUPYTER_SESSION)
    if notebook:
        return {TAG_SOURCE_NAME: str(notebook), TAG_SOURCE_TYPE: "NOTEBOOK"}
    if config is not None:
        launch = config.launch
        script = launch.entrypoint or launch.target_module
        if script:
            return {TAG_SOURCE_NAME: str(script), TAG_SOURCE_TYPE: "LOCAL"}
    return {}


def result_tags(result: TrainingResult) -> dict[str, object]:
    """How the job ended: status, exit code, duration, checkpoint, failing rank and headline."""
    tags: dict[str, object] = {
        "nbexec.status": result.status.value,
        "nbexec.exit_code": result.exit_code,
        "nbexec.duration_s": f"{result.duration_s:.3f}",
        "nbexec.world_size": result.nproc,
        "nbexec.backend": result.backend,
        "nbexec.config_hash": result.config_hash,
        "nbexec.run_name": result.run_name,
        "nbexec.run_dir": str(result.run_dir),
        "nbexec.command": shlex.join(redact_argv(result.command)) if result.command else None,
    }
    if result.checkpoint is not None:
        tags["nbexec.checkpoint"] = str(result.checkpoint)
    if result.root_cause is not None:
        tags[TAG_FAILURE] = result.root_cause.headline()
        if result.root_cause.rank is not None:
            tags["nbexec.failed_rank"] = result.root_cause.rank
    return tags


def add_training_tags(
    run_id: str,
    *,
    config: TrainingConfig | None = None,
    plan: LaunchPlan | None = None,
    result: TrainingResult | None = None,
    extra: Mapping[str, object] | None = None,
    notebook_path: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    scrubber: Scrubber | None = None,
) -> dict[str, str]:
    """Set nbexec's tags (see :func:`build_training_tags`) on an MLflow run.

    Args:
        run_id: the MLflow run.
        tracking_uri: its store (default: from :func:`nbexec.tracking.setup_mlflow`).
        Other arguments as for :func:`build_training_tags`.

    Returns:
        The tags that were set.

    Raises:
        TrackingError: the store cannot be reached.
    """
    from mlflow.entities import RunTag

    from nbexec.tracking.store import get_client, setup_mlflow

    tags = build_training_tags(
        config=config, plan=plan, result=result, extra=extra, notebook_path=notebook_path, scrubber=scrubber
    )
    uri = tracking_uri or setup_mlflow(config=config).tracking_uri
    log_batch_chunked(get_client(uri), run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    return tags


def git_tags(cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Commit and dirty flag of the git repository holding ``cwd``; {} outside one.

    MLflow sets no commit tag inside a Jupyter kernel (it looks at
    ``sys.argv[0]``), so nbexec asks git itself.
    """
    git = shutil.which("git")
    if git is None:
        return {}
    where = Path(cwd) if cwd is not None else Path.cwd()
    commit = _git(git, ["rev-parse", "HEAD"], where)
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit, "nbexec.git_commit": commit}
    # Untracked files (outputs/, mlflow.db) do not make the code dirty.
    status = _git(git, ["status", "--porcelain", "--untracked-files=no"], where, strip=False)
    if status is not None:
        tags["nbexec.git_dirty"] = "true" if status.strip() else "false"
    return tags


def _git(git: str, args: Sequence[str], cwd: Path, *, strip: bool = True) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock from a git
    # command the user is running at the same moment.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            [git, *args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() if strip else proc.stdout


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return None
