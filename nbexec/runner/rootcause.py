"""Find why a job failed: the first failing rank, its exit code and exception.

Primary source: the error records the worker bootstrap writes
(``logs/rank<N>.error.json``), the earliest of which is the root cause — later
ones are usually ranks that lost their peer. A rank killed by a signal leaves
no record; then torchrun's own failure summary in the launcher log names the
rank and exit code.

A collective timeout is the exception: the ranks that time out are the ones
that *were* in the collective, waiting for a peer. The rank that timed out
first asked its peers for their stacks before it exited (the worker
bootstrap), so the root cause names the rank whose stack was in no
collective then, with where it was, rather than the rank that timed out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbexec.contract as contract
from nbexec.errors import RootCause
from nbexec.runner.process import signal_name
from nbexec.stacks.parse import COLLECTIVE_TIMEOUT_RE, collective_in_traceback

# Stacks taken this long before the collective timed out, or later, still tell where the ranks were.
FRESH_STACKS_S = 60.0

# torchrun's summary: "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 123)"
_SUMMARY_RE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank.*?\n\s*exitcode\s*:\s*(-?\d+)", re.S)


def find_root_cause(run_dir: Path, launcher_exit_code: int | None) -> RootCause:
    """The best explanation available for a failed job; never raises."""
    records = []
    for path in (run_dir / contract.LOG_DIR).glob(contract.RANK_ERROR_GLOB):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if records:
        first = min(records, key=lambda r: r.get("time") or float("inf"))
        absent = _absent_from_collective(run_dir, first, {r.get("rank") for r in records})
        if absent is not None:
            return absent
        return RootCause(
            rank=first.get("rank"),
            exit_code=first.get("exit_code"),
            exc_type=first.get("exc_type") or "",
            message=first.get("message") or "",
            traceback=first.get("traceback") or "",
            time=first.get("time"),
            where=first.get("where") or "",
        )
    summary = _from_launcher_summary(run_dir / contract.LOG_DIR / contract.LAUNCHER_LOG)
    if summary is not None:
        return summary
    return RootCause(
        rank=None,
        exit_code=launcher_exit_code,
        message=describe_exit(launcher_exit_code, "torchrun")
        + "; see the launcher log",
    )


def _from_launcher_summary(path: Path) -> RootCause | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    # The "Root Cause (first observed failure)" section comes last in the summary.
    section = text[text.rfind("Root Cause") :] if "Root Cause" in text else text
    match = _SUMMARY_RE.search(section)
    if not match:
        return None
    rank, code = int(match.group(1)), int(match.group(2))
    return RootCause(rank=rank, exit_code=code, message=describe_exit(code, f"rank {rank}"))


def describe_exit(code: int | None, who: str) -> str:
    """``"rank 1 was killed by SIGKILL (out of memory?)"`` / ``"... exited with code 3"``."""
    if code is None:
        return f"{who} ended without an exit code"
    name = signal_name(code)
    if name:
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"{who} was killed by {name}{hint}"
    return f"{who} exited with code {code}"


def _absent_from_collective(run_dir: Path, first: dict, failed: set[object]) -> RootCause | None:
    """When ``first`` is a collective timeout: the rank that was not in the collective, from the stacks."""
    message = str(first.get("message") or "")
    if not COLLECTIVE_TIMEOUT_RE.search(message):
        return None
    from nbexec.stacks.snapshot import latest_stacks

    failed_at = first.get("time")
    since = failed_at - FRESH_STACKS_S if isinstance(failed_at, (int, float)) else None
    stacks = latest_stacks(run_dir, since=since)
    if stacks is None:
        return None
    absent = [r for r in stacks.not_waiting if r not in failed]
    if not absent:
        return None
    rank = stacks.rank(absent[0])
    timed_out = first.get("rank")
    collective = collective_in_traceback(str(first.get("traceback") or ""))
    in_what = f" in {collective}" if collective else ""
    others = "" if len(absent) == 1 else f" (so were ranks {', '.join(map(str, absent[1:]))})"
    cause = f"{first.get('exc_type') or 'error'}: {message.strip().splitlines()[0] if message.strip() else ''}"
    main = rank.main
    return RootCause(
        rank=rank.rank,
        exit_code=None,
        message=(f"was not in the collective that timed out{others}: it was {rank.where()}; rank {timed_out} "
                 f"timed out waiting for it{in_what} ({cause})"),
        traceback=main.format(f"rank {rank.rank}'s main thread when rank {timed_out} timed out") if main else "",
        time=first.get("time"),
        where=rank.frame.location if rank.frame is not None else "",
    )
