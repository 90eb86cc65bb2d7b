"""Hyperparameter sweeps with Optuna (the ``nbexec[hpo]`` extra): every trial a real training job.

- :func:`run_hpo` — run or resume a study in SQLite (``outputs/hpo/study.db``).
- :func:`get_or_compute_study_key_hash`, :func:`get_or_compute_trial_key_hash` — what identifies
  a study and a trial; :func:`data_fingerprint` — the content hash of a dataset.

Training the best trial's config, backing it up and recording its lineage is
:func:`nbexec.workflow.run_final_training_workflow`, above both sweeps and lineage.

Importing this package imports neither Optuna, torch nor MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "run_hpo": "nbexec.hpo.sweep",
    "HpoResult": "nbexec.hpo.sweep",
    "TrialRecord": "nbexec.hpo.trial",
    "SearchSpace": "nbexec.hpo.space",
    "data_fingerprint": "nbexec.hpo.fingerprint",
    "DataFingerprint": "nbexec.hpo.fingerprint",
    "compute_study_key_hash": "nbexec.hpo.keys",
    "compute_trial_key_hash": "nbexec.hpo.keys",
    "get_or_compute_study_key_hash": "nbexec.hpo.keys",
    "get_or_compute_trial_key_hash": "nbexec.hpo.keys",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from nbexec.hpo.fingerprint import DataFingerprint, data_fingerprint
    from nbexec.hpo.keys import (
        compute_study_key_hash,
        compute_trial_key_hash,
        get_or_compute_study_key_hash,
        get_or_compute_trial_key_hash,
    )
    from nbexec.hpo.space import SearchSpace
    from nbexec.hpo.sweep import HpoResult, run_hpo
    from nbexec.hpo.trial import TrialRecord
