"""Pre-launch checks: everything that would make a launch fail, reported at once.

Nothing here imports torch or runs user code: modules are located on
``sys.path`` without being imported, torch by its installed files.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbexec.config import TrainingConfig, load_config
from nbexec.errors import EnvironmentCheckError
from nbexec.hardware import HardwareInfo
from nbexec.plan import LaunchPlan, plan_training

MIN_TORCH = (2, 2)


@dataclass(frozen=True)
class Check:
    """One check's outcome, as shown by ``nbexec doctor``."""

    name: str
    ok: bool
    detail: str


def check_environment(plan: LaunchPlan, *, cwd: str | Path | None = None) -> list[Check]:
    """Run every pre-launch check for ``plan``; never raises."""
    cwd = Path(cwd or os.getcwd())
    return [
        _check_python(plan),
        _check_torch(),
        _check_entrypoint(plan, cwd),
        _check_output_dir(plan),
        _check_devices(plan),
    ]


def verify_training_environment(
    plan: LaunchPlan | TrainingConfig | Mapping[str, Any] | str | Path | None,
    *,
    cwd: str | Path | None = None,
) -> list[Check]:
    """Raise if anything would make the launch fail; nothing is spawned or written.

    Args:
        plan: a launch plan, or a config (anything :func:`load_config` takes),
            which is planned first.

    Returns:
        The (all passing) checks.

    Raises:
        EnvironmentCheckError: listing every problem found, each with its fix.
    """
    if not isinstance(plan, LaunchPlan):
        plan = plan_training(load_config(plan))
    checks = check_environment(plan, cwd=cwd)
    problems = [c.detail for c in checks if not c.ok]
    if problems:
        raise EnvironmentCheckError(problems)
    return checks


def _check_python(plan: LaunchPlan) -> Check:
    python = plan.argv[0]
    if Path(python).is_file() and os.access(python, os.X_OK):
        return Check("python", True, python)
    return Check("python", False, f"python interpreter {python!r} is not an executable file")


def _check_torch() -> Check:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return Check(
            "torch", False,
            "torch is not installed in this environment; install it "
            "(pip install 'torch>=2.2', or the CUDA build from pytorch.org for GPUs)",
        )
    torch_dir = Path(next(iter(spec.submodule_search_locations)))
    version = _torch_version(torch_dir)
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
    if len(parts) == 2 and parts < MIN_TORCH:
        return Check("torch", False, f"torch {version} is too old; nbexec needs torch>=2.2 (pip install -U torch)")
    if not (torch_dir / "distributed" / "run.py").is_file():
        return Check("torch", False, f"torch {version} at {torch_dir} has no torch.distributed.run (torchrun); reinstall torch")
    return Check("torch", True, f"torch {version} ({torch_dir})")


def _torch_version(torch_dir: Path) -> str:
    """torch's version from ``torch/version.py``, without importing torch or
    ``importlib.metadata`` (~20 ms of every ``nbexec train``)."""
    try:
        text = (torch_dir / "version.py").read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    if match:
        return match.group(1)
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_entrypoint(plan: LaunchPlan, cwd: Path) -> Check:
    launch = plan.config.launch
    if launch.entrypoint is not None:
        path = Path(launch.entrypoint)
        full = path if path.is_absolute() else cwd / path
        if not full.exists():
            return Check("entrypoint", False, f"launch.entrypoint {launch.entrypoint!r} does not exist (looked in {cwd}); give the path of your training script")
        if not full.is_file():
            return Check("entrypoint", False, f"launch.entrypoint {launch.entrypoint!r} is not a file; give the path of a .py script")
        if not os.access(full, os.R_OK):
            return Check("entrypoint", False, f"launch.entrypoint {launch.entrypoint!r} is not readable")
        return Check("entrypoint", True, str(full))
    module = launch.target_module or ""
    if _find_module(module, cwd, plan.env.get("PYTHONPATH", "")):
        return Check("entrypoint", True, f"-m {module}")
    return Check(
        "entrypoint", False,
        f"launch.module {module!r} was not found on the child's sys.path (the working directory, "
        "PYTHONPATH, site-packages); check the name or install the package",
    )


def _find_module(name: str, cwd: Path, pythonpath: str) -> bool:
    """Locate ``pkg.mod`` the way ``python -m`` would, without running any of it.

    The top-level package is looked up in the child's extra paths (cwd,
    PYTHONPATH), then through this interpreter's finders (which know
    site-packages and editable installs); submodules by path from there.
    """
    top, *rest = name.split(".")
    extra = [str(cwd), *[p for p in pythonpath.split(os.pathsep) if p]]
    spec = importlib.machinery.PathFinder.find_spec(top, extra)
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)  # a top-level lookup imports nothing
        except (ImportError, ValueError):
            spec = None
    fullname = top
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return False
        fullname = f"{fullname}.{part}"
        spec = importlib.machinery.PathFinder.find_spec(fullname, list(spec.submodule_search_locations))
    return spec is not None


def _check_output_dir(plan: LaunchPlan) -> Check:
    run_dir = plan.run_dir
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        return Check(
            "output", False,
            f"run directory {run_dir} already exists and is not empty; choose another "
            "output.run_name (or leave it unset for a fresh one) so no earlier run is overwritten",
        )
    parent = run_dir.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    problem = None
    if existing is None or not existing.is_dir():
        problem = f"{existing} is a file, not a directory"
    else:
        # Probe with a real write (root ignores permission bits, read-only
        # mounts do not); create nothing that stays behind.
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".nbexec-write-test-"):
                pass
        except OSError as err:
            problem = f"cannot create a file in {existing}: {err.strerror or err}"
    if problem:
        return Check(
            "output", False,
            f"output directory {parent} is not writable ({problem}); "
            "set output.dir (or --output) to a folder you can write to",
        )
    return Check("output", True, f"{parent} is writable")


def _check_devices(plan: LaunchPlan) -> Check:
    hw = plan.hardware
    problem = device_problem(plan.nproc, plan.backend, hw, oversubscribe=plan.config.launch.oversubscribe)
    if problem is not None:
        return Check("devices", False, problem)
    if plan.backend == "nccl":
        return Check("devices", True, f"{plan.nproc} of {hw.gpu_count} GPU(s), nccl")
    return Check("devices", True, f"{plan.nproc} process(es) on {hw.cpu_count} CPU core(s), gloo")


def device_problem(nproc: int, backend: str, hw: HardwareInfo, *, oversubscribe: bool = False) -> str | None:
    """Why ``nproc`` processes cannot run with ``backend`` on ``hw`` (None: they can).

    Also used by the panel to bound the process count while the user types.
    """
    if backend == "nccl":
        if not sys.platform.startswith("linux"):
            return "the nccl backend needs Linux; use launch.backend: gloo"
        if hw.gpu_count == 0:
            why = f" ({hw.gpu_error})" if hw.gpu_error else ""
            return (
                f"launch.backend is nccl but no NVIDIA GPU is visible{why}; "
                "use launch.backend: gloo (CPU) or check CUDA_VISIBLE_DEVICES / the driver"
            )
        if nproc > hw.gpu_count:
            return f"nproc {nproc} is more than the {hw.gpu_count} visible GPU(s); set launch.nproc to {hw.gpu_count} or 'auto'"
        return None
    if nproc > hw.cpu_count and not oversubscribe:
        return (
            f"nproc {nproc} is more than the {hw.cpu_count} CPU core(s) available; "
            f"set launch.nproc to at most {hw.cpu_count} (or 'auto'), or launch.oversubscribe: true "
            "to run more processes than cores anyway"
        )
    return None
