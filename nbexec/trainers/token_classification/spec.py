"""The built-in trainer as nbexec's core sees it (the ``nbexec.trainers`` entry point; no torch here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbexec.trainer_spec import TrainerSpec
from nbexec.trainers.token_classification import schema

MODULE = "nbexec.trainers.token_classification"


def _resolve(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return schema.resolved(sections.get("model"), sections.get("training"), sections.get("data"),
                           place_synthetic_data=False)


def _resume_problem(checkpoint: Path) -> str | None:
    from nbexec.trainers.token_classification.state import resume_problem

    return resume_problem(checkpoint)


def _prepare_data(resolved: Mapping[str, Mapping[str, Any]]) -> Path:
    from nbexec.trainers.token_classification.corpus import prepare_dataset

    data = resolved["data"]
    if data.get("path") is None:  # the job's config leaves the synthetic dataset's folder unset: place it
        data = schema.resolved(None, None, data)["data"]
    return prepare_dataset(data)


SPEC = TrainerSpec(
    module=MODULE,
    defaults=schema.DEFAULTS,
    resolve=_resolve,
    choices={"model.backbone": schema.BACKBONES},
    resume_problem=_resume_problem,
    prepare_data=_prepare_data,
)
