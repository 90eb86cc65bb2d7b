"""Lineage: where a trained model came from, as a record, MLflow tags and a table.

- :class:`Lineage` — data -> study -> best trial -> final run -> checkpoint -> backup;
  ``lineage.json`` in the run directory.
- :func:`extract_lineage_from_best_model` — rebuild it from a model directory and a study file.
- :func:`apply_lineage_tags` / :func:`read_lineage_tags` — the record as ``nbexec.lineage.*`` tags.
- :func:`render_lineage_text` — the table as text (``nbexec lineage PATH``), from
  :mod:`nbexec.render.lineage`; a notebook shows a record as HTML with links to the MLflow runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbexec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Lineage": "nbexec.lineage.record",
    "checkpoint_lineage": "nbexec.lineage.record",
    "extract_lineage_from_best_model": "nbexec.lineage.extract",
    "build_lineage": "nbexec.lineage.extract",
    "apply_lineage_tags": "nbexec.lineage.tags",
    "read_lineage_tags": "nbexec.lineage.tags",
    "lineage_to_tags": "nbexec.lineage.tags",
    "lineage_from_tags": "nbexec.lineage.tags",
    "lineage_rows": "nbexec.render.lineage",
    "render_lineage_text": "nbexec.render.lineage",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from nbexec.lineage.extract import build_lineage, extract_lineage_from_best_model
    from nbexec.lineage.record import Lineage, checkpoint_lineage
    from nbexec.lineage.tags import apply_lineage_tags, lineage_from_tags, lineage_to_tags, read_lineage_tags
    from nbexec.render.lineage import lineage_rows, render_lineage_text
