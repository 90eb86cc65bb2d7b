"""What nbexec's core knows about a trainer: a :class:`TrainerSpec`, found by the module that runs it.

The core never imports a trainer. The built-in one is named in :data:`TRAINERS`;
another package declares its spec under the ``nbexec.trainers`` entry point
group, named by the module ``-m`` runs:

    [project.entry-points."nbexec.trainers"]
    "my_pkg.train" = "my_pkg.nbexec_spec:SPEC"

The core looks a spec up when the config's target is that module: to
validate the trainer's sections (``model``, ``training``, ``data``) and fill
their defaults, to say what choices a form offers, to check a checkpoint
before resuming, to make the dataset an HPO study fingerprints. A script of
the user's own has no spec: its sections pass through as given.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "nbexec.trainers"

Sections = Mapping[str, Mapping[str, Any]]  # {"model": {...}, "training": {...}, "data": {...}}


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer, as the core sees it (every callable is cheap to import: no torch).

    Attributes:
        module: what ``python -m`` runs in each rank.
        defaults: the sections' defaults (``{"model": {...}, ...}``).
        resolve: sections as given -> sections with defaults filled and values
            normalised; raises ConfigError naming the field (a misspelt key too).
        choices: ``{"model.backbone": [...]}``, for forms.
        resume_problem: a checkpoint dir -> why it cannot be resumed from, or None.
        prepare_data: the resolved sections -> the dataset's path, made if it is
            generated (an HPO study fingerprints it before any trial runs).
    """

    module: str
    defaults: Sections
    resolve: Callable[[Sections], dict[str, dict[str, Any]]]
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    resume_problem: Callable[[Path], str | None] | None = None
    prepare_data: Callable[[Sections], Path | None] | None = None


# The built-in trainers, by the module that runs them -> "module:attribute" of their spec
# (imported only when a job runs them; the core imports no trainer).
TRAINERS: dict[str, str] = {
    "nbexec.trainers.token_classification": "nbexec.trainers.token_classification.spec:SPEC",
}


def trainer_spec(module: str | None) -> TrainerSpec | None:
    """The spec of the trainer ``module`` runs, or None (a script of the user's own)."""
    if not module:
        return None
    target = TRAINERS.get(module)
    if target is not None:
        name, _, attr = target.partition(":")
        spec = getattr(importlib.import_module(name), attr)
        return spec if isinstance(spec, TrainerSpec) else None
    return _plugin_specs().get(module)  # another package's trainer (scanning the installed packages: ~50 ms, once)


@functools.lru_cache(maxsize=1)
def _plugin_specs() -> dict[str, TrainerSpec]:
    from importlib.metadata import entry_points

    found: dict[str, TrainerSpec] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        spec = entry.load()
        if isinstance(spec, TrainerSpec):
            found[entry.name] = spec
    return found


__all__ = ["ENTRY_POINT_GROUP", "TRAINERS", "TrainerSpec", "trainer_spec"]
