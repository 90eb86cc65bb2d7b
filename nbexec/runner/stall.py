"""Stall detection: a job whose ranks stopped making progress, found from what the parent already sees.

Two rules, over ``launch.stall_timeout`` seconds (0: off):

- **silent**: no rank has printed anything (a line, a progress bar's redraw) or
  reported an event for that long;
- **behind**: one rank's reported step has not moved for that long while another
  rank's step moved past it (ranks report progress when the parent watches;
  see ``NBEXEC_PROGRESS_ALL_RANKS``). It catches a stuck rank even while the
  others keep printing.

:class:`StallWatch` only decides (times are given to it, so it is tested
without waiting); the run handle feeds it, asks it once a second, and on a
stall takes every rank's stacks, says what they show (:func:`describe_stall`),
and warns or cancels (``launch.on_stall``). After a stall it stays quiet until
the job shows signs of life again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nbexec.errors import RootCause
from nbexec.render.formats import duration

if TYPE_CHECKING:
    from nbexec.stacks.snapshot import StackSnapshot

STALL_EXC_TYPE = "Stall"  # the root cause's exc_type when nbexec cancelled a stalled job
SILENT = "silent"
BEHIND = "behind"


@dataclass(frozen=True)
class StallFinding:
    """What the watch found.

    Attributes:
        kind: ``silent`` (nobody progressed) or ``behind`` (``ranks`` fell behind the others).
        idle_s: how long the job (``silent``) or the rank (``behind``) has made no progress.
        ranks: the ranks that fell behind (``behind``); empty for ``silent``.
        steps: the last step each rank reported, when ranks report progress.
    """

    kind: str
    idle_s: float
    ranks: tuple[int, ...] = ()
    steps: Mapping[int, int] = field(default_factory=dict)


class StallWatch:
    """Decides whether a job has stalled, from when each rank last showed progress.

    Thread-safe: the pump and the handle feed it, a watcher thread checks it.

    Args:
        timeout_s: seconds without progress that make a stall.
        started: when the job started (monotonic): a job silent from its start stalls too.
        startup_s: more time allowed before any rank shows a sign of life: what nbexec itself
            may hold the ranks for before their script starts (the MLflow run opening).
    """

    def __init__(self, timeout_s: float, started: float, startup_s: float = 0.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._started = started
        self._startup_s = startup_s
        self._last_activity: float | None = None  # any rank's output or event (None: none yet)
        self._steps: dict[int, tuple[int, float]] = {}  # rank -> (step, when it last changed)
        self._stall: StallFinding | None = None  # the stall reported last (None: armed)
        self._stalled_at: float | None = None

    @property
    def stalled(self) -> bool:
        """A stall was reported and what stalled has not moved since."""
        return self._stall is not None

    @property
    def ranks_seen(self) -> bool:
        """Some rank has shown a sign of life (output, an event, its script starting)."""
        return self._last_activity is not None

    def output(self, now: float) -> None:
        """A rank printed something, reported an event, or started its script."""
        last = self._last_activity
        self._last_activity = now if last is None else max(last, now)

    def progress(self, rank: int, step: int, now: float) -> None:
        """A rank reported its step."""
        with self._lock:
            self.output(now)
            known = self._steps.get(rank)
            if known is None or known[0] != step:
                self._steps[rank] = (step, now)

    def check(self, now: float) -> StallFinding | None:
        """A new stall, or None (no stall, or the last one is still the one reported).

        Once the job shows progress after a reported stall, :meth:`recovered` says so
        and the watch is armed again.
        """
        with self._lock:
            if self._stalled_at is not None:
                return None
            finding = self._behind(now) or self._silent(now)
            if finding is not None:
                self._stall, self._stalled_at = finding, now
            return finding

    def recovered(self) -> bool:
        """True once, when what stalled moves again (the watch is then armed for the next stall).

        After a ``silent`` stall, any output or event; after a ``behind`` one, a new
        step from a rank that fell behind (the others may have printed all along).
        """
        with self._lock:
            stall, since = self._stall, self._stalled_at
            if stall is None or since is None:
                return False
            if stall.kind == BEHIND:
                moved = any(self._steps[r][1] > since for r in stall.ranks if r in self._steps)
            else:
                moved = self._last_activity is not None and self._last_activity > since
            if moved:
                self._stall = self._stalled_at = None
            return moved

    def _silent(self, now: float) -> StallFinding | None:
        if self._last_activity is None:  # no rank has started yet: nbexec's own wait is allowed too
            idle = now - self._started
            if idle < self.timeout_s + self._startup_s:
                return None
        else:
            idle = now - self._last_activity
            if idle < self.timeout_s:
                return None
        return StallFinding(SILENT, idle, steps={r: s for r, (s, _) in self._steps.items()})

    def _behind(self, now: float) -> StallFinding | None:
        if len(self._steps) < 2:
            return None
        lead_step = max(step for step, _ in self._steps.values())
        behind = []
        for rank, (step, changed) in sorted(self._steps.items()):
            if step >= lead_step or now - changed < self.timeout_s:
                continue
            # someone moved on since this rank last did: it is behind, not the whole job stopped
            if any(other_changed > changed for r, (_, other_changed) in self._steps.items() if r != rank):
                behind.append(rank)
        if not behind:
            return None
        idle = max(now - self._steps[r][1] for r in behind)
        return StallFinding(BEHIND, idle, tuple(behind), {r: s for r, (s, _) in self._steps.items()})


def describe_stall(finding: StallFinding, stacks: StackSnapshot | None, *, stacks_error: str = "") -> str:
    """One message: who has not progressed for how long, and where the others wait.

    e.g. ``rank 1 has not progressed for 5 min 00 s (at train.py:8 in <module>: time.sleep(3600));
    rank 0 is waiting in all_reduce``.
    """
    idle = duration(finding.idle_s)
    waiting = stacks.waiting if stacks is not None else {}
    stuck = list(stuck_ranks(finding, stacks))
    if stuck:
        head = f"{rank_list(stuck)} {'has' if len(stuck) == 1 else 'have'} not progressed for {idle}"
        if finding.kind == BEHIND and finding.steps:
            lead = max(finding.steps.values())
            head += f" (step {_steps_of(stuck, finding.steps)}; others reached {lead})"
    else:
        head = f"no rank has printed or reported progress for {idle}"
    parts = [head + _where(stuck, stacks)]
    if waiting:
        groups: dict[str, list[int]] = {}
        for rank, collective in waiting.items():
            groups.setdefault(collective, []).append(rank)
        said = [f"{rank_list(ranks)} {'is' if len(ranks) == 1 else 'are'} waiting in {name}"
                for name, ranks in groups.items()]
        if not stuck and stacks is not None and len(waiting) == len(stacks.ranks):
            said.append("every rank is in a collective: do they call different ones, or the same one with "
                        "different sizes?" if len(groups) > 1 else "every rank is in it: a peer on another "
                        "machine, or the network?")
        parts.append("; ".join(said))
    elif stacks is not None and not stuck:
        parts.append("; ".join(stacks.summary_lines()))
    if stacks is None:
        parts.append(f"no stacks ({stacks_error})" if stacks_error else "no stacks")
    return "; ".join(p for p in parts if p)


def rank_list(ranks: Sequence[int]) -> str:
    """``rank 1``, ``ranks 0 and 2–3``, ``ranks 0–7``."""
    ordered = sorted(set(ranks))
    spans: list[str] = []
    start = prev = None
    for r in [*ordered, None]:
        if r is not None and prev is not None and r == prev + 1:
            prev = r
            continue
        if start is not None:
            spans.append(str(start) if start == prev else f"{start}–{prev}")
        start = prev = r
    if len(ordered) == 1:
        return f"rank {spans[0]}"
    text = spans[0] if len(spans) == 1 else ", ".join(spans[:-1]) + " and " + spans[-1]
    return f"ranks {text}"


def _steps_of(ranks: Sequence[int], steps: Mapping[int, int]) -> str:
    return ", ".join(str(steps[r]) for r in ranks if r in steps)


def _where(stuck: Sequence[int], stacks: StackSnapshot | None) -> str:
    if stacks is None or len(stuck) != 1:
        return ""
    try:
        rank = stacks.rank(stuck[0])
    except KeyError:
        return ""
    return f" ({rank.where()})" if rank.main is not None else ""


def stall_path_note(stacks: StackSnapshot | None, run_dir: Path) -> str:
    """``stacks in logs/stacks-<time>.txt`` (relative to the run dir), or ""."""
    if stacks is None or stacks.path is None:
        return ""
    try:
        return f"stacks in {stacks.path.relative_to(run_dir)}"
    except ValueError:
        return f"stacks in {stacks.path}"


@dataclass(frozen=True)
class Stall:
    """A stall the run handle reported (``run.stall``, ``run.stalls``).

    Attributes:
        message: what it said (who has not progressed, where the others wait).
        finding: what the watch found.
        stacks: every rank's stacks when it was found (saved in ``logs/stacks-<time>.txt``), or None.
        ranks: the ranks found stuck (behind the others, or in no collective while others wait in one).
        detected_at: ``time.time()`` when it was found.
        action: ``launch.on_stall``: ``warn`` or ``cancel``.
    """

    message: str
    finding: StallFinding
    stacks: StackSnapshot | None
    ranks: tuple[int, ...]
    detected_at: float
    action: str

    def event(self) -> dict[str, object]:
        """The ``stall`` event sinks get (the tracking layer tags the MLflow run from it)."""
        return {
            "kind": "stall", "time": self.detected_at, "rank": None, "message": self.message,
            "ranks": list(self.ranks), "idle_s": round(self.finding.idle_s, 1), "action": self.action,
            "stacks": str(self.stacks.path) if self.stacks is not None and self.stacks.path else None,
        }

    def root_cause(self) -> RootCause:
        """The root cause of a job cancelled for this stall: the stuck rank and where it was."""
        rank = self.ranks[0] if len(self.ranks) == 1 else None
        where, stack = "", ""
        if rank is not None and self.stacks is not None:
            try:
                found = self.stacks.rank(rank)
            except KeyError:
                found = None
            if found is not None and found.main is not None:
                stack = found.main.format(f"rank {rank}'s main thread when the stall was found")
                where = found.frame.location if found.frame is not None else ""
        if not stack and self.stacks is not None:  # no one rank to blame: where each one was
            stack = "every rank when the stall was found:\n" + "\n".join(f"  {ln}" for ln in self.stacks.summary_lines())
        message = f"{self.message}; nbexec cancelled the job (launch.on_stall: cancel)"
        return RootCause(rank=rank, exit_code=None, exc_type=STALL_EXC_TYPE, message=message, traceback=stack,
                         time=self.detected_at, where=where)


def stuck_ranks(finding: StallFinding, stacks: StackSnapshot | None) -> tuple[int, ...]:
    """The ranks behind the others, or else those in no collective while others wait in one."""
    if finding.ranks:
        return finding.ranks
    if stacks is None or not stacks.waiting:
        return ()
    return tuple(r for r in stacks.not_waiting if r not in stacks.waiting)
