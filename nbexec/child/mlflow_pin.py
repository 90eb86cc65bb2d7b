"""Keep a rank's MLflow calls in the job's run, even after something ended it.

MLflow reads ``MLFLOW_RUN_ID`` once: the first ``mlflow.start_run()`` resumes
that run and deletes the variable. Any later run start in the process, an
explicit one or the implicit one in ``mlflow.log_metric()`` with no active
run, creates a new run. Hugging Face's Trainer does exactly that: it ends the
run when training ends, so ``trainer.evaluate()`` afterwards logs into a
second, unlinked run (also under bare torchrun).

:func:`pin_fluent_runs` makes ``mlflow.start_run()`` in this process resume
the job's run whenever it would otherwise create a new top-level run in the
job's experiment: no run id given, no active run, not nested, no other
experiment chosen. Nested runs, runs in another experiment, and runs made
with ``MlflowClient.create_run`` are left alone. mlflow is not imported here:
the pin is applied when the script imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

FLUENT = "mlflow.tracking.fluent"
ENV_DISABLE = "NBEXEC_MLFLOW_PIN"  # "0": leave MLflow's own behaviour alone


def pin_fluent_runs(run_id: str, experiment_id: str | None) -> None:
    """Pin fluent run starts in this process to ``run_id`` (see the module docstring)."""
    if os.environ.get(ENV_DISABLE) == "0":
        return
    module = sys.modules.get(FLUENT)
    if module is not None:
        _pin(module, run_id, experiment_id)
    else:
        sys.meta_path.insert(0, _PinOnImport(run_id, experiment_id))


class _PinOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when ``mlflow.tracking.fluent`` is imported, pins it once loaded."""

    def __init__(self, run_id: str, experiment_id: str | None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != FLUENT:
            return None
        sys.meta_path.remove(self)  # once is enough
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        exec_module = loader.exec_module
        run_id, experiment_id = self.run_id, self.experiment_id

        def exec_and_pin(module: ModuleType) -> None:
            exec_module(module)
            _pin(module, run_id, experiment_id)

        loader.exec_module = exec_and_pin  # type: ignore[method-assign]
        return spec


def _pin(fluent: ModuleType, run_id: str, experiment_id: str | None) -> None:
    original = getattr(fluent, "start_run", None)
    if original is None or getattr(original, "_nbexec_pinned", False):
        return
    pinned = _pinned_start_run(fluent, original, run_id, experiment_id)
    fluent.start_run = pinned  # type: ignore[attr-defined]
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and getattr(mlflow, "start_run", None) is original:
        mlflow.start_run = pinned  # type: ignore[attr-defined]


def _pinned_start_run(fluent: ModuleType, original: Callable[..., Any], run_id: str,
                      experiment_id: str | None) -> Callable[..., Any]:
    import functools
    import inspect

    signature = inspect.signature(original)

    @functools.wraps(original)
    def start_run(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)  # let MLflow say what is wrong
        given = bound.arguments
        chosen_experiment = getattr(fluent, "_active_experiment_id", None)
        if (
            given.get("run_id") is None
            and not given.get("nested")
            and given.get("parent_run_id") is None
            and not os.environ.get("MLFLOW_RUN_ID")
            and fluent.active_run() is None
            and str(given.get("experiment_id") or experiment_id) == str(experiment_id)
            and str(chosen_experiment or experiment_id) == str(experiment_id)
        ):
            given["run_id"] = run_id
        return original(*bound.args, **bound.kwargs)

    start_run._nbexec_pinned = True  # type: ignore[attr-defined]
    return start_run
