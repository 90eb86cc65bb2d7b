"""Configure MLflow once: resolve the tracking store, check it answers, set the experiment.

:func:`setup_mlflow` is the single place nbexec configures MLflow. It never
changes MLflow's process-wide state (``mlflow.set_tracking_uri`` also writes
``os.environ``); everything nbexec does goes through an explicit
``MlflowClient(tracking_uri)``. To point your own ``mlflow.*`` calls at the same
store, call ``mlflow.set_tracking_uri(setup.tracking_uri)``.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbexec.errors import TrackingError
from nbexec.render.links import experiment_url, run_url, server_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nbexec.config import TrainingConfig

DEFAULT_EXPERIMENT = "nbexec"
# MLflow 3's UI picks an experiment's views by this tag: "custom_model_development" is
# "Machine learning" (training runs, metrics, charts); without it the UI may guess GenAI
# (traces, evaluations). The values are the UI's ExperimentKind enum.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
HEALTH_TIMEOUT_S = 3.0
_DISABLE_HINT = "or turn tracking off (tracking: {enabled: false}, nbexec train --no-tracking)"


class TrackingWarning(UserWarning):
    """MLflow bookkeeping failed, but the training itself was not affected."""


@dataclass(frozen=True)
class TrackingSetup:
    """Where runs are tracked, as resolved by :func:`setup_mlflow`.

    Attributes:
        tracking_uri: the store (``sqlite:////abs/mlflow.db`` or ``http://host:port``).
        experiment_id, experiment_name: the experiment runs are created in.
        artifact_location: the experiment's artifact root (None: the server decides).
        ui_hint: how to look at the runs: a ``mlflow ui ...`` command for a
            local store, the experiment's URL for a server.
    """

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    artifact_location: str | None
    ui_hint: str

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """The run's page on a tracking server; None for a local store."""
        server = server_url(self.tracking_uri)
        return run_url(server, run_id, experiment_id or self.experiment_id) if server else None

    def where(self, run_id: str, experiment_id: str | None = None) -> str:
        """One line telling a person where to open a run."""
        url = self.run_url(run_id, experiment_id)
        if url:
            return url
        return f"run {run_id} (experiment id {experiment_id or self.experiment_id}); open with: {self.ui_hint}"


_lock = threading.RLock()
_setups: dict[tuple[str, str], TrackingSetup] = {}
_current: TrackingSetup | None = None


def setup_mlflow(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    *,
    config: TrainingConfig | None = None,
) -> TrackingSetup:
    """Configure the MLflow store and experiment runs go to; idempotent.

    The store is chosen from, in order: ``tracking_uri``, ``$MLFLOW_TRACKING_URI``,
    ``config.tracking.uri``, the store of an earlier ``setup_mlflow`` call in
    this process, and the embedded default ``sqlite:///<cwd>/mlflow.db`` (with
    artifacts in ``<cwd>/mlartifacts``). The experiment is ``experiment``, else
    the config's ``tracking.experiment`` (``"nbexec"`` unless the config names
    one): a run never inherits the experiment of an earlier run. Only a call
    with neither (``setup_mlflow()``, asking where things are) returns the
    earlier call's experiment. The store is created (SQLite) and the experiment
    made here, in the parent, before any training process could race to do it;
    an experiment nbexec makes, or finds without a kind, is tagged as a
    model-training one (:data:`EXPERIMENT_KIND_TAG`), so MLflow 3's UI shows its
    training runs rather than its GenAI views.

    Repeated calls with the same result are cheap: only the reachability check
    runs again.

    Args:
        tracking_uri: an MLflow tracking URI (``http://host:5000``, ``sqlite:///x.db``).
        experiment: experiment name.
        config: a training config whose ``tracking`` section is consulted.

    Returns:
        The resolved :class:`TrackingSetup`.

    Raises:
        TrackingError: the server does not answer, the database cannot be
            written, or the experiment cannot be used; the message names the
            URI and the fix. Nothing has been spawned at that point.
    """
    global _current
    with _lock:
        uri = normalize_tracking_uri(resolve_tracking_uri(tracking_uri, config=config))
        name = resolve_experiment(experiment, config=config)
        check_store_reachable(uri)
        cached = _setups.get((uri, name))
        if cached is not None:
            if _still_there(cached):
                _current = cached
                return cached
            forget_database(uri)
        ensure_sqlite_store(uri)
        setup = _create_setup(uri, name)
        _setups[(uri, name)] = setup
        _current = setup
        return setup


def current_setup() -> TrackingSetup | None:
    """The setup of the latest :func:`setup_mlflow` call in this process, if any."""
    return _current


def known_server_url() -> str | None:
    """The tracking server's URL when runs live on one: the current setup's, else ``$MLFLOW_TRACKING_URI``'s.

    None for a local store (its runs have no web pages).
    """
    setup = _current
    return server_url(setup.tracking_uri if setup is not None else os.environ.get("MLFLOW_TRACKING_URI"))


def reset_setup() -> None:
    """Forget earlier setups (tests; a kernel that switched projects)."""
    global _current
    with _lock:
        _setups.clear()
        _current = None


def resolve_tracking_uri(
    tracking_uri: str | None = None,
    *,
    config: TrainingConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The tracking URI by nbexec's resolution order (see :func:`setup_mlflow`)."""
    env = os.environ if env is None else env
    if tracking_uri:
        return str(tracking_uri)
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    if config is not None and config.tracking.uri:
        return config.tracking.uri
    if _current is not None:
        return _current.tracking_uri
    return "sqlite:///" + str(Path.cwd() / DEFAULT_DB)


def resolve_experiment(experiment: str | None = None, *, config: TrainingConfig | None = None) -> str:
    """The experiment name: ``experiment``, else the config's ``tracking.experiment``.

    A run's experiment depends only on what the run is given, never on an
    earlier run in the same process (``%train tiny.yaml`` after
    ``%train ... --experiment ner`` goes to ``nbexec``, the config's default).
    Without either, the earlier :func:`setup_mlflow` call's, then ``"nbexec"``.
    """
    if experiment:
        return str(experiment)
    if config is not None:
        return config.tracking.experiment or DEFAULT_EXPERIMENT
    if _current is not None:
        return _current.experiment_name
    return DEFAULT_EXPERIMENT


def normalize_tracking_uri(uri: str) -> str:
    """SQLite paths made absolute (children may start elsewhere); no trailing slash on URLs."""
    uri = uri.strip()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    path = sqlite_path(uri)
    if path is not None:
        query = uri.partition("?")[2]
        return "sqlite:///" + str(path) + (f"?{query}" if query else "")
    return uri


def uri_for_display(uri: str) -> str:
    """``uri`` without credentials (``https://user:secret@host`` -> ``https://host``), for files and messages."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest.partition("/")[0]:
        return uri
    return f"{scheme}://{rest.partition('@')[2]}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), None for other URIs."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:") :].partition("?")[0]
    if not rest.startswith("///"):
        raise TrackingError(
            f"tracking URI {uri!r} is not a SQLite file URI; use sqlite:///relative/path.db "
            f"or sqlite:////absolute/path.db"
        )
    raw = rest[3:]
    if raw in ("", ":memory:"):
        raise TrackingError(
            f"tracking URI {uri!r} is an in-memory SQLite store, which training processes cannot "
            f"share; use a file such as sqlite:///mlflow.db, {_DISABLE_HINT}"
        )
    return Path(raw).absolute()


def check_store_reachable(uri: str) -> None:
    """Fail fast, before anything is spawned, when the store cannot be used.

    A server must answer ``/health`` within a few seconds; a SQLite database
    must be in a writable directory (created if missing).

    Raises:
        TrackingError: naming the URI and the fix.
    """
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
        return
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(uri, path)


def store_gone(uri: str) -> str | None:
    """Why an already set-up store cannot be used any more, or None when it can.

    Asked before writing to a store at the end of a job: a server that
    stopped, or a SQLite file that was deleted (writing would silently create
    an empty database in its place).
    """
    path = sqlite_path(uri)
    if path is not None:
        return None if path.is_file() else f"the database file {path} no longer exists"
    try:
        check_store_reachable(uri)
    except TrackingError as err:
        return str(err).split("; nothing was started")[0]
    return None


def _check_server(uri: str) -> None:
    url = f"{uri}/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            response.read(64)
    except urllib.error.HTTPError as err:
        if err.code < 500:  # it answered (e.g. 401 behind auth): MLflow calls will say more
            return
        reason: object = f"HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
    else:
        return
    raise TrackingError(
        f"MLflow tracking server {uri} is not reachable ({reason}); nothing was started. "
        f"Start it (e.g. mlflow server --host 127.0.0.1 --port <port> "
        f"--backend-store-uri sqlite:///mlflow.db), fix MLFLOW_TRACKING_URI / tracking.uri, "
        f"unset them to use the local SQLite store, {_DISABLE_HINT}"
    )


def _check_sqlite(uri: str, path: Path) -> None:
    fix = (
        "choose a writable location (tracking.uri or MLFLOW_TRACKING_URI, e.g. sqlite:///mlflow.db "
        f"in a directory you own), {_DISABLE_HINT}"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(
            f"MLflow store {uri}: cannot create directory {path.parent} ({err.strerror or err}); {fix}"
        ) from err
    if path.exists():
        if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
            raise TrackingError(f"MLflow store {uri}: {path} is not a writable file; {fix}")
        check_sqlite_schema(uri, path)
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow store {uri}: directory {path.parent} is not writable; {fix}")


# --- SQLite stores: made whole, checked before use -------------------------------------

CREATE_LOCK_WAIT_S = 300.0  # how long to wait for another process creating the same store


def check_sqlite_schema(uri: str, path: Path) -> None:
    """Refuse a SQLite store MLflow cannot use, with the fix; a missing or empty one is fine.

    Read with the standard library only (no mlflow import: this runs before
    every launch). A store whose creation or upgrade was cut off (a job killed
    while MLflow made its tables) has tables but no schema version, or a version
    behind the tables it holds; MLflow then fails on every call ("table ...
    already exists") and every later job would run untracked.

    Raises:
        TrackingError: naming the file, what is wrong and how to repair or move it.
    """
    state, found = _schema_state(path)
    if state in ("missing", "empty", "current", "unknown"):
        return
    moved = path.with_name(path.name + ".broken")
    aside = f"mv {shlex.quote(str(path))} {shlex.quote(str(moved))}"
    if state == "no-version":
        raise TrackingError(
            f"MLflow store {uri} is half-created: it has tables but no schema version (MLflow was "
            f"interrupted while creating it). It holds no usable runs: move it aside ({aside}) and "
            f"run again, and nbexec creates a new store; {_DISABLE_HINT}"
        )
    head = _schema_head()
    if state == "ahead":
        raise TrackingError(
            f"MLflow store {uri} has schema version {found}, which this MLflow ({_mlflow_version()}) "
            f"does not know: it was made by a newer MLflow. Upgrade mlflow in this environment "
            f"(pip install -U mlflow), or use another store (tracking.uri); {_DISABLE_HINT}"
        )
    raise TrackingError(
        f"MLflow store {uri} has schema version {found}, this MLflow expects {head}: it was made by an "
        f"older MLflow, or MLflow was interrupted while upgrading it. Back it up, then upgrade it: "
        f"mlflow db upgrade {shlex.quote(uri)}. If that fails ('already exists'), the upgrade was cut "
        f"off: move it aside ({aside}) and run again for a new store; {_DISABLE_HINT}"
    )


def ensure_sqlite_store(uri: str) -> None:
    """Create a new SQLite store whole, or check an existing one.

    MLflow creates and migrates a new store's tables in place, which takes
    seconds; a job killed meanwhile, or several jobs starting at once in a
    new directory, left a half-made file that broke every later job. Here a
    new store is made in a temporary file beside it and renamed into place,
    under a lock file (``.mlflow.db.lock``): concurrent creators wait for one,
    and the real path only ever holds a complete store.

    Raises:
        TrackingError: the store is unusable (see :func:`check_sqlite_schema`),
            or another process has been creating it for too long.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    if _schema_state(path)[0] not in ("missing", "empty"):
        check_sqlite_schema(uri, path)
        return
    with _create_lock(uri, path):
        if _schema_state(path)[0] not in ("missing", "empty"):  # made by another process meanwhile
            check_sqlite_schema(uri, path)
            return
        for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a creator that was killed
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
        tmp_uri = "sqlite:///" + str(tmp)
        try:
            get_client(tmp_uri).search_experiments(max_results=1)  # MLflow makes and migrates the schema
        except Exception as err:  # noqa: BLE001 - MLflow/SQLAlchemy errors alike
            tmp.unlink(missing_ok=True)
            raise TrackingError(
                f"MLflow store {uri} could not be created: {_first_line(err)}; {_DISABLE_HINT}"
            ) from err
        finally:
            forget_database(tmp_uri)
        with open(tmp, "rb+") as fh:  # on disk before it is visible under its name
            os.fsync(fh.fileno())
        if _schema_state(path)[0] not in ("missing", "empty"):  # made meanwhile by MLflow itself, elsewhere
            tmp.unlink(missing_ok=True)
            return
        os.replace(tmp, path)
        # A connection this process opened on the path before (MLflow caches one engine per URI)
        # would still point at the file just replaced: SQLite then refuses every write to it.
        forget_database(uri)


class _create_lock:  # noqa: N801 - used as a context manager, reads as a statement
    """An exclusive ``flock`` on ``.<db>.lock`` beside the store; waits for another creator."""

    def __init__(self, uri: str, path: Path) -> None:
        self.uri = uri
        self.path = path.with_name(f".{path.name}.lock")
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl
        import time

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + CREATE_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TrackingError(
                        f"MLflow store {self.uri}: another process has been creating it for over "
                        f"{CREATE_LOCK_WAIT_S:.0f} s (it holds {self.path}); try again, {_DISABLE_HINT}"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


def _schema_state(path: Path) -> tuple[str, str | None]:
    """``(state, version)``: missing, empty, current, behind, ahead, no-version, or unknown (busy, not SQLite)."""
    import sqlite3

    if not path.exists():
        return "missing", None
    if path.stat().st_size == 0:
        return "empty", None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return "empty", None
            if "alembic_version" not in tables:
                return "no-version", None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return "unknown", None  # locked for long, or not a database: MLflow says what it finds
    if row is None:
        return "no-version", None
    version = str(row[0])
    head = _schema_head()
    if head is None or version == head:
        return "current", version
    return ("behind" if version in _schema_revisions() else "ahead"), version


def _schema_head() -> str | None:
    revisions = _schema_revisions()
    heads = set(revisions) - {down for downs in revisions.values() for down in downs}
    return heads.pop() if len(heads) == 1 else None


@functools.lru_cache(maxsize=1)
def _schema_revisions() -> dict[str, tuple[str, ...]]:
    """The installed MLflow's schema migrations, ``{revision: down revisions}``, read from its files
    (importing mlflow would cost seconds before every launch)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return {}
    versions = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    revision_re = re.compile(r"^revision\s*=\s*['\"](\w+)['\"]", re.M)
    down_re = re.compile(r"^down_revision\s*=\s*(.+)$", re.M)
    out: dict[str, tuple[str, ...]] = {}
    for script in versions.glob("*.py"):
        text = script.read_text(errors="replace")
        rev, down = revision_re.search(text), down_re.search(text)
        if rev:
            out[rev.group(1)] = tuple(re.findall(r"['\"](\w+)['\"]", down.group(1))) if down else ()
    return out


def _mlflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "not installed"


def _still_there(setup: TrackingSetup) -> bool:
    """A cached local store whose file was deleted must be set up again."""
    path = sqlite_path(setup.tracking_uri)
    return path is None or path.exists()


def forget_database(uri: str) -> None:
    """Make MLflow forget a SQLite file that was deleted or replaced (``nbexec.restore``).

    The next use of ``uri`` opens the file afresh (creating it when missing).

    MLflow caches one store object and one engine per URI for the process; its
    pooled connections still see the deleted file and the tables are never
    created again. There is no public way to reset them: best effort, and if
    it fails, creating the experiment fails with a TrackingError.
    """
    for key in [k for k, s in _setups.items() if s.tracking_uri == uri]:
        del _setups[key]
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
        _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError):
        pass


def get_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` (MLflow caches the store per URI)."""
    from mlflow.tracking import MlflowClient

    _hide_store_creation_notes()
    return MlflowClient(tracking_uri=tracking_uri)


class _StoreCreationNotes(logging.Filter):
    """Drops MLflow's INFO lines about creating or upgrading a SQLite store's tables."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.getMessage().startswith(_STORE_CREATION_NOTES)


_STORE_CREATION_NOTES = ("Creating initial MLflow database tables", "Updating database tables")


def _hide_store_creation_notes() -> None:
    """Keep MLflow's store-creation INFO lines out of notebook cells.

    MLflow logs them from whichever thread opens a new store first. In a
    notebook that is often a background thread (the panel's run history, a run
    opened while the job starts), so they land in whatever cell runs then,
    e.g. between a checked cell's own lines. Only these two notes are dropped;
    anything else MLflow logs, warnings and errors included, still shows.
    """
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _StoreCreationNotes) for f in logger.filters):
        logger.addFilter(_StoreCreationNotes())


def _create_setup(uri: str, name: str) -> TrackingSetup:
    try:
        client = get_client(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment = _create_experiment(client, uri, name)
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 - MLflow/SQLAlchemy/requests errors alike
        raise TrackingError(
            f"MLflow store {uri} could not be used for experiment {name!r}: {_first_line(err)}. "
            f"Check the URI and credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN), {_DISABLE_HINT}"
        ) from err
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) in {uri} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another "
            f"name (tracking.experiment)"
        )
    _mark_training_experiment(client, experiment)
    return TrackingSetup(
        tracking_uri=uri,
        experiment_id=str(experiment.experiment_id),
        experiment_name=name,
        artifact_location=experiment.artifact_location,
        ui_hint=_ui_hint(uri, str(experiment.experiment_id)),
    )


def _mark_training_experiment(client: MlflowClient, experiment: Any) -> None:
    """Tag the experiment as a model-training one, unless someone already chose its kind."""
    if (experiment.tags or {}).get(EXPERIMENT_KIND_TAG):
        return  # the user's (or the UI's) choice stands
    try:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)
    except Exception as err:  # noqa: BLE001 - a read-only store still tracks; only the UI's default view differs
        logging.getLogger(__name__).debug("could not tag experiment %s: %s", experiment.experiment_id, err)


def _create_experiment(client: MlflowClient, uri: str, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    location = None
    path = sqlite_path(uri)
    if path is not None:  # artifacts beside the database, not in the current directory
        location = (path.parent / DEFAULT_ARTIFACT_DIR).as_uri()
    try:
        client.create_experiment(name, artifact_location=location,
                                 tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND})
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":  # another process won the race
            raise
    return client.get_experiment_by_name(name)


def _ui_hint(uri: str, experiment_id: str) -> str:
    # Kept with the cached setup: a UI nbexec starts for a local store later (or stops) is
    # looked up when a run's page is asked for (TrackingSetup.run_url), never baked in here.
    if uri.startswith(("http://", "https://")):
        return experiment_url(uri.rstrip("/"), experiment_id)
    command = f"mlflow ui --backend-store-uri {shlex.quote(display_store_uri(uri))}"
    return command if mlflow_ui_installed() else f"{command}   (the UI: pip install 'nbexec[ui]')"


def mlflow_ui_installed() -> bool:
    """Whether ``mlflow ui`` can run here: nbexec needs only mlflow-skinny, the UI's server is full mlflow's."""
    import importlib.util

    return importlib.util.find_spec("flask") is not None and importlib.util.find_spec("mlflow.server") is not None


def display_store_uri(uri: str, cwd: Path | None = None) -> str:
    """``uri`` as a person in ``cwd`` would type it: a SQLite file under ``cwd`` relative
    (``sqlite:///mlflow.db``), anything else as it is, without credentials."""
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if path is not None:
        try:
            relative = path.relative_to((cwd or Path.cwd()).absolute())
        except ValueError:
            return uri
        query = uri.partition("?")[2]
        return f"sqlite:///{relative.as_posix()}" + (f"?{query}" if query else "")
    return uri_for_display(uri)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]
