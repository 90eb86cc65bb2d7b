"""Helpers shared by the benchmark scripts in this folder (standard library only).

The scripts run as ``python bench/<name>.py``, so this module is imported as
``_common`` (the script's folder is first on ``sys.path``).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# The flood script the tests use: each rank prints N numbered lines (N = argv[1]).
FLOOD = (Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "scripts" / "flood.py").read_text()


class CommandFailed(RuntimeError):
    pass


def run_timed(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> float:
    """Run ``argv`` (a list, no shell) to the end; return its wall time in seconds.

    Output is captured (so the terminal does not slow the command down) and
    shown only if the command fails.
    """
    return run_measured(argv, cwd=cwd, env=env, timeout=timeout)[0]


def run_measured(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> tuple[float, float]:
    """Like :func:`run_timed`; returns (wall s, CPU s of the whole process tree).

    The CPU time (user + system) counts the command and every descendant that
    was waited for (the workers are reaped by torchrun, torchrun by its parent).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace")[-3000:]
        err = proc.stderr.decode(errors="replace")[-3000:]
        raise CommandFailed(
            f"command failed with exit code {proc.returncode}: {list(argv)}\n"
            f"--- stdout (tail) ---\n{out}\n--- stderr (tail) ---\n{err}"
        )
    return elapsed, cpu


def bench_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for the measured commands: ``base`` without MLFLOW_* variables.

    ``nbexec train`` tracks into MLflow by default; without MLFLOW_TRACKING_URI
    it uses ./mlflow.db and ./mlartifacts in its working directory (the
    benchmark's temp dir), so nothing is written outside it.
    """
    return {k: v for k, v in base.items() if not k.startswith("MLFLOW_")}


def count_lines(path: str) -> int:
    """Number of newline characters in a file (read in 1 MiB chunks)."""
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def describe_machine() -> str:
    try:
        torch_version = importlib.metadata.version("torch")  # no `import torch`: keep this process light
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (
        f"python {platform.python_version()} ({sys.executable}), torch {torch_version}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )


def loadavg() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def print_header(title: str, details: Sequence[str] = ()) -> None:
    print(f"== {title} ==")
    print(f"machine: {describe_machine()}")
    print(f"load average at start: {loadavg()}")
    for line in details:
        print(line)
    sys.stdout.flush()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table; floats are printed as given (format them first)."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    print(fmt(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(fmt(row))
    sys.stdout.flush()


def noise_note(samples: Mapping[str, Sequence[float]]) -> str:
    """A one-line hint whether the run looked disturbed (spread of the samples), with the load average.

    The load average is shown, not judged: the benchmarks themselves keep
    several processes busy, so a load above the core count is expected.
    """
    notes = []
    for name, values in samples.items():
        if values and min(values) > 0 and max(values) / min(values) > 1.5:
            notes.append(f"{name}: max/min spread {max(values) / min(values):.2f}x")
    verdict_text = "; ".join(notes) + " -> possibly disturbed, consider rerunning" if notes else "looks steady"
    return f"noise: {verdict_text} (load average at end: {loadavg()})"


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"
