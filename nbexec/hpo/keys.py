"""Key hashes: what identifies a study, and a trial within it.

- study key: backbone, data fingerprint, search space, objective (metric and direction);
- trial key: the study key and the trial's params.

Both are sha256 (64 hex) of canonical JSON (sorted keys, no whitespace), so
they are the same in every process and for any key order. The
``get_or_compute_*`` functions read a hash already stored (Optuna user
attribute, MLflow tag) before computing it, and store what they compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbexec.errors import ConfigError
from nbexec.hashing import canonical_sha256

STUDY_KEY_ATTR = "nbexec.study_key_hash"  # Optuna study user attribute and MLflow tag
TRIAL_KEY_ATTR = "nbexec.trial_key_hash"  # Optuna trial user attribute and MLflow tag
KEY_VERSION = 1  # part of every key: bump when what a key covers changes


def key_hash(payload: Any) -> str:
    """sha256 of canonical JSON: stable across processes and key order (strict: NaN or a
    value JSON cannot hold raises, so a key never depends on a ``str()``)."""
    return canonical_sha256(payload)


def compute_study_key_hash(
    *,
    backbone: str,
    data_fingerprint: str | None,
    search_space: Any,
    objective: str,
    direction: str,
) -> str:
    """The study key: what makes two sweeps the same study (pure; nothing is read or stored).

    Args:
        backbone: the model backbone (``model.backbone``, or the script's name).
        data_fingerprint: :func:`nbexec.hpo.fingerprint.data_fingerprint` ``.sha256``.
        search_space: a :class:`~nbexec.hpo.space.SearchSpace` or anything ``SearchSpace.parse`` takes.
        objective, direction: the metric optimised and ``minimize``/``maximize``.
    """
    from nbexec.hpo.space import SearchSpace

    space = SearchSpace.parse(search_space).to_dict()
    return key_hash({
        "v": KEY_VERSION,
        "backbone": backbone,
        "data": data_fingerprint,
        "space": space,
        "objective": {"metric": objective, "direction": direction},
    })


def compute_trial_key_hash(study_key_hash: str, params: Mapping[str, Any]) -> str:
    """The trial key: the study key and the trial's params (pure)."""
    return key_hash({"v": KEY_VERSION, "study": study_key_hash, "params": dict(params)})


def get_or_compute_study_key_hash(
    study_key_hash: str | None = None,
    *,
    study: Any = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    backbone: str | None = None,
    data_fingerprint: str | None = None,
    search_space: Any = None,
    objective: str | None = None,
    direction: str | None = None,
) -> str:
    """The study key hash: given, stored, or computed (and then stored).

    Looked up in order: ``study_key_hash`` itself (trusted as given), the
    Optuna ``study``'s user attribute, the MLflow run ``run_id``'s tag
    ``nbexec.study_key_hash``. Otherwise it is computed from ``backbone``,
    ``data_fingerprint``, ``search_space``, ``objective`` and ``direction``
    and stored on the study and the run given.

    Raises:
        ConfigError: nothing stored and an input needed to compute it is missing.
    """
    if study_key_hash:
        return study_key_hash
    stored = _stored(study, run_id, tracking_uri, STUDY_KEY_ATTR)
    if stored:
        return stored
    missing = [n for n, v in (("backbone", backbone), ("search_space", search_space), ("objective", objective),
                               ("direction", direction)) if v is None]
    if missing:
        raise ConfigError(
            f"no study key hash is stored and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} needed to compute one",
            field=missing[0],
        )
    key = compute_study_key_hash(backbone=str(backbone), data_fingerprint=data_fingerprint,
                                 search_space=search_space, objective=str(objective), direction=str(direction))
    _store(study, None, run_id, tracking_uri, STUDY_KEY_ATTR, key)
    return key


def get_or_compute_trial_key_hash(
    trial_key_hash: str | None = None,
    *,
    trial: Any = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    study_key_hash: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The trial key hash: given, stored, or computed (and then stored).

    Looked up in order: ``trial_key_hash``, the Optuna ``trial``'s user
    attribute (a live ``Trial`` or a ``FrozenTrial``), the MLflow run's tag
    ``nbexec.trial_key_hash``. Otherwise it is computed from
    ``study_key_hash`` and ``params`` (default: the trial's params) and stored
    on a live trial and the run given.

    Raises:
        ConfigError: nothing stored and no study key hash or params to compute it from.
    """
    if trial_key_hash:
        return trial_key_hash
    stored = _stored(trial, run_id, tracking_uri, TRIAL_KEY_ATTR)
    if stored:
        return stored
    if params is None and trial is not None:
        params = trial.params
    if not study_key_hash or params is None:
        raise ConfigError(
            "no trial key hash is stored; give study_key_hash and params (or the trial) to compute one",
            field="study_key_hash" if not study_key_hash else "params",
        )
    key = compute_trial_key_hash(study_key_hash, params)
    _store(None, trial, run_id, tracking_uri, TRIAL_KEY_ATTR, key)
    return key


def _stored(optuna_obj: Any, run_id: str | None, tracking_uri: str | None, name: str) -> str | None:
    if optuna_obj is not None:
        value = (getattr(optuna_obj, "user_attrs", None) or {}).get(name)
        if value:
            return str(value)
    if run_id:
        from nbexec.tracking.store import get_client, setup_mlflow

        uri = tracking_uri or setup_mlflow().tracking_uri
        value = get_client(uri).get_run(run_id).data.tags.get(name)
        if value:
            return str(value)
    return None


def _store(study: Any, trial: Any, run_id: str | None, tracking_uri: str | None, name: str, key: str) -> None:
    for target in (study, trial):
        if target is not None and hasattr(target, "set_user_attr"):  # a FrozenTrial has no setter
            target.set_user_attr(name, key)
    if run_id:
        from nbexec.tracking.store import get_client, setup_mlflow

        uri = tracking_uri or setup_mlflow().tracking_uri
        get_client(uri).set_tag(run_id, name, key)
