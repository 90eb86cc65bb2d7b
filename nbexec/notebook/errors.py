"""Errors shown briefly in a cell: the message that matters, not the magic's own frames.

IPython renders an exception that has ``_render_traceback_`` with the lines it
returns (the hook ipyparallel uses for remote errors). The magics raise
nbexec's own exceptions unchanged, so code that catches them still works;
only what the cell shows is shorter: for a failed run, the failing rank's
exception and traceback and where the logs are, instead of the magic's stack
and torchelastic's report.
"""

from __future__ import annotations

from typing import TypeVar

from nbexec.errors import TrainingFailed

E = TypeVar("E", bound=BaseException)

RED, BOLD, RESET = "\x1b[0;31m", "\x1b[1m", "\x1b[0m"


def shown_briefly(err: E, lines: list[str] | None = None) -> E:
    """Make ``err`` render as ``lines`` (default: ``Type: message``) in a cell; returns it."""
    rendered = lines if lines is not None else brief_lines(err)
    err._render_traceback_ = lambda: list(rendered)  # type: ignore[attr-defined]
    return err


def brief_lines(err: BaseException) -> list[str]:
    """``Type: message`` with the type in red, then the message's other lines."""
    text = str(err)
    first, _, rest = text.partition("\n")
    out = [f"{RED}{type(err).__name__}{RESET}: {first}" if first else f"{RED}{type(err).__name__}{RESET}"]
    if rest:
        out += rest.splitlines()
    return out


def failure_lines(err: TrainingFailed) -> list[str]:
    """A failed run: the rank, its exception, its traceback, the log files."""
    rc = err.root_cause
    lines = [f"{RED}TrainingFailed{RESET}: {BOLD}{rc.headline()}{RESET} (run {err.run_name})"]
    if rc.where:
        lines.append(f"at {rc.where}")
    if rc.traceback:
        where = f"rank {rc.rank}" if rc.rank is not None else "the launcher"
        lines.append(f"traceback from {where}:")
        lines += rc.traceback.rstrip().splitlines()
    elif err.log_tail:
        lines.append("last lines of its log:")
        lines += err.log_tail
    if err.log_paths:
        lines.append("logs: " + ", ".join(f"{name}: {path}" for name, path in err.log_paths.items()))
    return lines
