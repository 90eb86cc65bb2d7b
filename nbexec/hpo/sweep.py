"""``run_hpo``: an Optuna study in SQLite whose trials are real training jobs.

    result = run_hpo("tiny.yaml", {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1,
                                                               "log": True}},
                     n_trials=4, study_path="outputs/hpo/study.db")
    result.best.params, result.best.value

``n_trials`` is the size the study should reach, not how many to add: run the
same call again after an interruption and it runs only what is missing. A
trial that was running when the sweep died (its process is gone, or it was
interrupted) is run again under its own number with its own params, so
nothing is duplicated. The study remembers what defines it (its key hash:
backbone, data fingerprint, search space, objective); resuming it with
different ones is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.contract import DEFAULT_STUDY_PATH
from nbexec.errors import ConfigError, EnvironmentCheckError
from nbexec.hpo.keys import STUDY_KEY_ATTR, compute_study_key_hash
from nbexec.hpo.space import SearchSpace, apply_params
from nbexec.hpo.trial import (
    ATTR_FAILURE,
    ATTR_INTERRUPTED,
    ATTR_MLFLOW_RUN,
    TrialRecord,
    TrialSetup,
    claim_trial,
    hold_interrupt,
    is_stale,
    run_trial,
)
from nbexec.result import RunStatus

if TYPE_CHECKING:
    from nbexec.config import TrainingConfig
    from nbexec.runner.sinks import Sink

DIRECTIONS = ("minimize", "maximize")
# Study user attributes (what the final workflow and lineage read back).
ATTR_SPACE = "nbexec.search_space"
ATTR_OBJECTIVE = "nbexec.objective"
ATTR_BASE_CONFIG = "nbexec.base_config"
ATTR_BACKBONE = "nbexec.backbone"
ATTR_DATA_PATH = "nbexec.data_path"
ATTR_DATA_FINGERPRINT = "nbexec.data_fingerprint"
ATTR_STUDY_RUN = "nbexec.mlflow_run_id"
ATTR_EXPERIMENT_ID = "nbexec.mlflow_experiment_id"
ATTR_OUTPUT_DIR = "nbexec.output_dir"


@dataclass(frozen=True)
class HpoResult:
    """A sweep's outcome: the study as it stands, every trial, the best one.

    Attributes:
        storage: the study's Optuna storage URL (``sqlite:////abs/study.db``).
        trials: every trial of the study, by number (earlier sessions' too).
        best: the best COMPLETE trial, or None when none completed.
        mlflow_run_id: the study's MLflow run (trials are its children), when tracked.
    """

    study_name: str
    study_path: Path
    storage: str
    study_key_hash: str
    objective: str
    direction: str
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    data_fingerprint: str | None = None
    mlflow_run_id: str | None = None
    output_dir: Path | None = None
    ran: tuple[int, ...] = field(default=())  # trial numbers run by this call

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def report(self) -> str:
        """The study as text: one line per trial, then the best."""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        lines = [f"study {self.study_name} ({self.study_path}): {len(self.trials)} trials ({counts}); "
                 f"{self.direction} {self.objective}"]
        lines += ["  " + t.line(self.objective) for t in self.trials]
        if self.best is not None:
            lines.append(f"best: trial {self.best.number} {self.objective}={self.best.value:.6g} "
                         + " ".join(f"{k}={v}" for k, v in self.best.params.items()))
        else:
            lines.append("best: none (no trial completed)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = f", best trial {self.best.number} {self.objective}={self.best.value:.4g}" if self.best else ""
        return f"<HpoResult {self.study_name!r} {len(self.trials)} trials{best}>"


def run_hpo(
    config: str | Path | Mapping[str, Any] | TrainingConfig | None,
    search_space: SearchSpace | Mapping[str, Any] | str | Path,
    n_trials: int,
    *,
    study_path: str | os.PathLike[str] = DEFAULT_STUDY_PATH,
    study_name: str | None = None,
    objective: str = "val_loss",
    direction: str = "minimize",
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike[str] | None = None,
    sampler: Any = None,
    pruner: Any = None,
    seed: int | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    trial_timeout: float | None = None,
    sinks: Callable[[Any], Sequence[Sink]] | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> HpoResult:
    """Run (or resume) a hyperparameter sweep until the study has ``n_trials`` trials.

    Args:
        config: the base training config (path, YAML text, dict, TrainingConfig, None: defaults).
        search_space: dotted config keys -> distributions (see :mod:`nbexec.hpo.space`).
        n_trials: how many trials the study should have when this returns (finished
            ones of earlier sessions count; failed and pruned ones count too).
        study_path: the SQLite file of the study (created with its folder).
        study_name: default ``hpo-<backbone>-<first 8 hex of the study key>``.
        objective, direction: the metric (last value a trial reports) and
            ``minimize``/``maximize``.
        overrides: ``key=value`` overrides of the base config.
        output_dir: where trial run directories go (default ``<study dir>/<study name>``).
        sampler, pruner: Optuna objects (default TPE seeded with ``seed``, and the median pruner).
        tracking_uri, experiment: the MLflow store and experiment (as for ``setup_mlflow``);
            ``tracking.enabled: false`` in the config runs the sweep untracked.
        trial_timeout: cancel a trial's job after this many seconds (the trial fails).
        sinks: ``sinks(trial)`` gives display sinks for each trial's job.
        on_trial: called with each trial's record as it ends.

    Returns:
        The :class:`HpoResult`.

    Raises:
        ConfigError: bad config, space, objective, direction or n_trials, a study file that
            is not an Optuna study, or a study of that name made for other inputs; nothing is started.
        EnvironmentCheckError: Optuna is not installed (``pip install 'nbexec[hpo]'``).
        TrackingError: the MLflow store cannot be reached; nothing is started.
        KeyboardInterrupt: the running trial's job is cancelled; run again to resume.
    """
    optuna = require_optuna()
    from nbexec.config import load_config

    cfg = load_config(config, overrides=overrides)
    if experiment:  # kept in the study's config: the final run goes to the same experiment
        cfg = apply_params(cfg, {"tracking.experiment": experiment})
    space = SearchSpace.parse(search_space)
    _check_args(n_trials, objective, direction)
    path = Path(study_path).absolute()
    check_study_file(path)  # before the data is generated: a wrong --study writes nothing
    backbone, data_path, fingerprint = study_inputs(cfg)
    if data_path:  # every trial (and the final run) reads the same data, wherever it starts
        cfg = apply_params(cfg, {"data.path": data_path})
    key = compute_study_key_hash(backbone=backbone, data_fingerprint=fingerprint, search_space=space,
                                 objective=objective, direction=direction)
    name = study_name or f"hpo-{backbone}-{key[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{path}"
    study = _open_study(optuna, path, study_name=name, storage=storage, direction=direction, load_if_exists=True,
                        sampler=sampler, pruner=pruner or optuna.pruners.MedianPruner())
    if sampler is None:
        # A resumed session must not replay the first session's draws (they would repeat its params):
        # the seed moves on with the trials already in the study, and stays reproducible.
        done = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + done)
    _claim(study, key, name, path)
    out = Path(output_dir).absolute() if output_dir is not None else path.parent / name
    if not study.user_attrs.get(STUDY_KEY_ATTR):
        _remember(study, cfg, space, key, objective, direction, backbone, data_path, fingerprint, out)
    study_run = None
    if cfg.tracking.enabled:
        study_run = _open_study_run(study, cfg, name, key, storage, tracking_uri, experiment)
    setup = TrialSetup(
        config=cfg, space=space, objective=objective, study_key_hash=key, study_name=name, output_dir=out,
        study_run_id=study_run.run_id if study_run else None,
        tracking_uri=study_run.tracking_uri if study_run else None, sinks=sinks, timeout=trial_timeout,
    )
    ran: list[int] = []
    try:
        while True:
            trial, attempt = _pick_trial(study, n_trials, optuna, setup, path)
            if trial is None:
                break
            record = run_trial(study, trial, setup, attempt)
            ran.append(record.number)
            if on_trial is not None:
                on_trial(record)
    except BaseException as err:
        if study_run is not None:
            study_run.abort(err)
        raise
    result = collect(study, path, out, ran)
    if study_run is not None:
        _close_study_run(study_run, result)
    return result


def require_optuna() -> Any:
    """The optuna module, or an error that says how to install it."""
    try:
        import optuna
    except ImportError as err:
        raise EnvironmentCheckError(
            [f"Optuna is not installed ({err}); install the HPO extra: pip install 'nbexec[hpo]'"]
        ) from err
    return optuna


SQLITE_HEADER = b"SQLite format 3\x00"
_STUDY_FIX = "give a new file, or a study file made by nbexec hpo (--study PATH, or study_path=)"


def check_study_file(path: Path) -> None:
    """Refuse a study path that is not (and cannot become) an Optuna SQLite study.

    A missing or empty file is fine (the study is created). Nothing is written.

    Raises:
        ConfigError: ``field="study_path"``: a directory, a file that is not an SQLite
            database, or an SQLite database of something else (an MLflow store...).
    """
    import sqlite3

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"study file {path} {problem}; {_STUDY_FIX}", field="study_path", value=str(path))

    if path.is_dir():
        raise refuse("is a directory")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise refuse(f"cannot be created: {blocker} is a file, not a folder")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as err:
        raise refuse(f"cannot be read ({err.strerror or err})") from err
    if head != SQLITE_HEADER:
        raise refuse(f"is not an SQLite database (it starts with {head[:12]!r})")
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as err:
        raise refuse(f"is not a readable SQLite database ({err})") from err
    if tables and not {"studies", "version_info"} <= tables:
        raise refuse(f"is an SQLite database but not an Optuna study (its tables: {', '.join(sorted(tables)[:8])})")


def _open_study(optuna: Any, path: Path, **kwargs: Any) -> Any:
    """``optuna.create_study`` with the database's own failures said in nbexec's words.

    Raises:
        EnvironmentCheckError: the study file cannot be opened or written (permissions, a lock...).
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.create_study(**kwargs)
    except SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        raise EnvironmentCheckError(
            [f"the study file {path} cannot be opened ({cause}); check that it can be read and written, "
             "or give another (--study PATH, or study_path=)"]
        ) from err


def study_inputs(cfg: TrainingConfig) -> tuple[str, str | None, str | None]:
    """``(backbone, data path, data fingerprint)`` of a base config.

    The built-in trainer's synthetic dataset is generated first (deterministic,
    the same the trials would make), so its fingerprint is real.
    """
    from nbexec.hpo.fingerprint import data_fingerprint
    from nbexec.trainer_spec import trainer_spec

    data_path = cfg.data.get("path")
    spec = trainer_spec(cfg.launch.target_module)
    if spec is not None and spec.prepare_data is not None:  # e.g. the built-in trainer's generated dataset
        resolved = spec.resolve({"model": cfg.model, "training": cfg.training, "data": cfg.data})
        made = spec.prepare_data(resolved)
        data_path = str(made) if made is not None else data_path
        backbone = str(resolved["model"].get("backbone") or "")
    else:
        what = cfg.launch.entrypoint or cfg.launch.module or "script"
        backbone = str(cfg.model.get("backbone") or Path(what).stem.rsplit(".", 1)[-1])
    fingerprint = data_fingerprint(data_path).sha256 if data_path else None
    return backbone, (str(Path(data_path).absolute()) if data_path else None), fingerprint


def collect(study: Any, path: Path, output_dir: Path | None = None, ran: Sequence[int] = ()) -> HpoResult:
    """An :class:`HpoResult` from a study as it stands."""
    attrs = study.user_attrs
    objective = attrs.get(ATTR_OBJECTIVE, {}) or {}
    trials = tuple(TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False))
    complete = [t for t in trials if t.state == "COMPLETE"]
    best = None
    if complete:
        best_number = study.best_trial.number
        best = next(t for t in complete if t.number == best_number)
    return HpoResult(
        study_name=study.study_name, study_path=path, storage=f"sqlite:///{path}",
        study_key_hash=attrs.get(STUDY_KEY_ATTR, ""), objective=objective.get("metric", ""),
        direction=study.direction.name.lower(), trials=trials, best=best,
        data_fingerprint=attrs.get(ATTR_DATA_FINGERPRINT), mlflow_run_id=attrs.get(ATTR_STUDY_RUN),
        output_dir=output_dir or (Path(attrs[ATTR_OUTPUT_DIR]) if attrs.get(ATTR_OUTPUT_DIR) else None),
        ran=tuple(ran),
    )


def _check_args(n_trials: Any, objective: Any, direction: Any) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials = {n_trials!r} is not allowed; use an integer >= 1 (the study's size)",
                          field="n_trials", value=n_trials)
    if not isinstance(objective, str) or not objective.strip():
        raise ConfigError(f"objective = {objective!r} is not allowed; name a metric the trainer reports, "
                          "e.g. val_loss", field="objective", value=objective)
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction = {direction!r} is not allowed; use minimize or maximize",
                          field="direction", value=direction)


def _claim(study: Any, key: str, name: str, path: Path) -> None:
    stored = study.user_attrs.get(STUDY_KEY_ATTR)
    if stored and stored != key:
        raise ConfigError(
            f"study {name!r} in {path} was made for other inputs (study key {stored[:12]}, now {key[:12]}): "
            "the backbone, the data, the search space or the objective changed. Use another study_name "
            "or study_path for the new sweep",
            field="study_name", value=name,
        )


def _remember(study: Any, cfg: TrainingConfig, space: SearchSpace, key: str, objective: str, direction: str,
              backbone: str, data_path: str | None, fingerprint: str | None, output_dir: Path) -> None:
    from nbexec.redact import split_secrets

    clean, _ = split_secrets(cfg.to_dict())  # the study file must hold no secret
    values = {
        ATTR_SPACE: space.to_dict(), ATTR_OBJECTIVE: {"metric": objective, "direction": direction},
        ATTR_BASE_CONFIG: clean, ATTR_BACKBONE: backbone, ATTR_DATA_PATH: data_path,
        ATTR_DATA_FINGERPRINT: fingerprint, ATTR_OUTPUT_DIR: str(output_dir),
    }
    with hold_interrupt():
        for name, value in values.items():
            study.set_user_attr(name, value)
        study.set_user_attr(STUDY_KEY_ATTR, key)  # last: a study with its key is a complete one


@contextmanager
def study_lock(study_path: Path) -> Iterator[None]:
    """Workers of one study (terminals, kernels on this machine) pick trials one at a time.

    Without it, two workers could both see ``n_trials - 1`` trials and both ask
    for another, or both take up the same stale trial. The lock is an advisory
    ``flock`` on ``<study>.lock`` beside the SQLite file, held only while a
    trial is picked and claimed. Where ``fcntl`` is missing (Windows) it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(study_path.with_name(study_path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pick_trial(study: Any, n_trials: int, optuna: Any, setup: TrialSetup, path: Path) -> tuple[Any, int]:
    """The next trial, claimed by this process, and its attempt number; (None, 0) when the study is full.

    One worker at a time (the study lock), and a stop button pressed meanwhile
    lands after the claim: the claimed trial is then marked to run again, so a
    sweep restarted in the same kernel picks it up instead of waiting for it.
    """
    trial = None
    try:
        with study_lock(path), hold_interrupt():
            trial = _next_trial(study, n_trials, optuna, setup)
            return trial, claim_trial(trial) if trial is not None else 0
    except KeyboardInterrupt:
        if trial is not None:
            with hold_interrupt():
                trial.set_user_attr(ATTR_INTERRUPTED, True)
        raise


def _next_trial(study: Any, n_trials: int, optuna: Any, setup: TrialSetup) -> Any:
    """The next trial to run: a stale one first (same number, same params), else a new one; None when done."""
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    stale = [t for t in running if is_stale(t)]
    finished = [t for t in trials if t.state.is_finished()]
    if stale:
        t = stale[0]
        _retire_attempt(t, setup)
        return optuna.trial.Trial(study, t._trial_id)
    if len(finished) + len(running) >= n_trials:
        return None
    return study.ask()


def _retire_attempt(trial: Any, setup: TrialSetup) -> None:
    """The MLflow run of a stale trial's dead attempt ends KILLED (the trial runs again)."""
    run_id = trial.user_attrs.get(ATTR_MLFLOW_RUN)
    if not run_id or setup.tracking_uri is None:
        return
    from nbexec.tracking.store import get_client

    try:
        client = get_client(setup.tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            note = f"the sweep stopped during trial {trial.number}; it runs again in a new attempt"
            client.set_tag(run_id, "nbexec.failure", note)
            client.set_tag(run_id, ATTR_FAILURE, note)
            client.set_terminated(run_id, status="KILLED")
    except Exception:  # noqa: BLE001 - bookkeeping of a dead attempt must not stop the sweep
        pass


def _open_study_run(study: Any, cfg: TrainingConfig, name: str, key: str, storage: str,
                    tracking_uri: str | None, experiment: str | None) -> Any:
    """The study's MLflow run: the one an earlier session opened, or a new one."""
    from nbexec.tracking import create_training_mlflow_run
    from nbexec.tracking.store import get_client, setup_mlflow
    from nbexec.tracking.tracked import TrackedRun

    setup = setup_mlflow(tracking_uri, experiment, config=cfg)
    run_id = study.user_attrs.get(ATTR_STUDY_RUN)
    if run_id:
        client = get_client(setup.tracking_uri)
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - another store, or the run was deleted: open a new one
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            if run.info.status != "RUNNING":  # resumed after an interruption, or extended
                client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "nbexec.status", "RUNNING")
            return TrackedRun(setup=setup, run_id=run_id, experiment_id=run.info.experiment_id, run_name=name,
                              config=cfg)
    tracked = create_training_mlflow_run(
        cfg, run_name=name, tracking_uri=setup.tracking_uri, experiment=setup.experiment_name,
        tags={"nbexec.stage": "hpo", "nbexec.hpo.study_name": name, STUDY_KEY_ATTR: key,
              "nbexec.hpo.storage": storage},
    )
    with hold_interrupt():
        study.set_user_attr(ATTR_STUDY_RUN, tracked.run_id)
        study.set_user_attr(ATTR_EXPERIMENT_ID, tracked.experiment_id)
    return tracked


def _close_study_run(study_run: Any, result: HpoResult) -> None:
    from nbexec.tracking.store import get_client

    client = get_client(study_run.tracking_uri)
    counts = result.counts()
    tags = {"nbexec.hpo.trials": str(len(result.trials)),
            **{f"nbexec.hpo.trials_{state.lower()}": str(n) for state, n in counts.items()}}
    if result.best is not None:
        tags.update({"nbexec.hpo.best_trial": str(result.best.number),
                     "nbexec.hpo.best_run_id": result.best.mlflow_run_id or ""})
        client.log_metric(study_run.run_id, "hpo.best_value", float(result.best.value or 0.0))
    for k, v in tags.items():
        client.set_tag(study_run.run_id, k, v)
    study_run.end(RunStatus.FINISHED)  # status and nbexec.status tag, as any run nbexec ends
