"""What a running job's events say so far: its phase, progress (with speed and ETA), metrics, resources, data.

The run handle keeps one :class:`RunState` for its public properties
(``run.phase``, ``run.progress``...), and each view keeps its own, fed with the
same events in the order the dispatcher delivers them together with the log
lines. So a view's progress line and its log tail always describe the same
moment: the bar is never behind the line the trainer printed after reporting
the step (events are read before the lines that follow them, see
:mod:`nbexec.runner.streams`).

Phases (:class:`PhaseName`) tell a person what a job is doing when no step is
moving:

- ``starting``: torchrun spawning the ranks, the ranks importing, the rendezvous,
  loading data (until the first step);
- ``training``: steps are being made;
- ``finishing``: after the last step: validation, saving the checkpoint, the
  processes ending, the MLflow run ending, the backup;
- ``stopping``: the job was cancelled and is being stopped.

They come as ``phase`` events, from the trainer (``ctx.report_phase``) and from
the parent (the launch, the ranks connecting, each finalizer), and are
inferred from progress: a step moves ``starting`` to ``training``, the last
step (``step >= total``) moves it to ``finishing``.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbexec.events import Event

RATE_WINDOW = 20  # progress events the speed is measured over (recent ones: the speed now, not on average)


class PhaseName(str, enum.Enum):
    """Where a job is in its life; see the module's docstring."""

    STARTING = "starting"
    TRAINING = "training"
    FINISHING = "finishing"
    STOPPING = "stopping"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Phase:
    """A phase, what is happening in it (``"saving the checkpoint"``), and since when (``time.time()``)."""

    name: PhaseName
    detail: str | None = None
    since: float = 0.0

    def label(self) -> str:
        """``finishing · saving the checkpoint``."""
        return f"{self.name.value} · {self.detail}" if self.detail else self.name.value


def phase_event(name: PhaseName | str, detail: str | None = None, *, when: float | None = None) -> Event:
    """A ``phase`` event as the parent or the child API writes it."""
    event: Event = {"kind": "phase", "phase": str(PhaseName(name)), "time": time.time() if when is None else when}
    if detail:
        event["detail"] = detail
    return event


class RunState:
    """Folds a job's events into what a person wants to see now. Not thread-safe: its owner locks.

    Progress from the trainer's events wins over progress read off a tqdm bar
    (``source: "text"``); a script that sends events and also draws a bar is
    shown by its events.
    """

    def __init__(self, *, started: float | None = None) -> None:
        self.phase = Phase(PhaseName.STARTING, "launching", started if started is not None else time.time())
        self.metrics: dict[str, float] = {}
        self.resources: Event | None = None
        self.data: Event | None = None  # the trainer's "data" event: the dataset it actually used
        self._progress: Event | None = None
        self._text_progress: Event | None = None
        self._recent: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)  # (time, step) of progress events
        self._phase_set_by_trainer = False  # an explicit "finishing" is not undone by a later progress event

    # --- what it says ---------------------------------------------------------------

    @property
    def progress(self) -> Event | None:
        """The latest progress, with ``rate`` (steps/s) and ``eta_s`` when they can be known."""
        return self._progress if self._progress is not None else self._text_progress

    @property
    def last_step(self) -> int | None:
        """The last step reported (None before any)."""
        step = (self.progress or {}).get("step")
        return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None

    @property
    def total_steps(self) -> int | None:
        total = (self.progress or {}).get("total")
        return int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0 else None

    # --- what changes it ------------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> None:
        """Take new events, in the order they came."""
        for ev in events:
            kind = ev.get("kind")
            if kind == "progress":
                if ev.get("rank") not in (0, None):
                    continue  # every rank reports progress while stalls are watched; the job's is rank 0's
                self._on_progress(ev)
            elif kind == "metrics" and isinstance(ev.get("metrics"), Mapping):
                self.metrics.update(ev["metrics"])
            elif kind == "phase":
                self._on_phase(ev)
            elif kind == "resources":
                self.resources = ev
            elif kind == "data":
                self.data = ev

    def set_phase(self, name: PhaseName, detail: str | None = None, when: float | None = None) -> None:
        self.phase = Phase(name, detail, time.time() if when is None else when)

    def _on_phase(self, ev: Event) -> None:
        try:
            name = PhaseName(ev.get("phase"))
        except ValueError:
            return  # a phase of the trainer's own: kept in run.events, not shown as one
        if self.phase.name is PhaseName.STOPPING and name is not PhaseName.STOPPING:
            return  # a cancelled job is stopping, whatever its last steps say
        detail = ev.get("detail")
        self.set_phase(name, str(detail) if detail else None, _when(ev))
        if ev.get("source") != "parent":
            self._phase_set_by_trainer = name is PhaseName.FINISHING

    def _on_progress(self, ev: Event) -> None:
        if ev.get("source") == "text":
            if self._progress is not None:
                return  # the trainer's own events win
            self._text_progress = ev
            self._follow_step(ev)
            return
        step = ev.get("step")
        when = _when(ev)
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            if self._recent and step < self._recent[-1][1]:
                self._recent.clear()  # the step went back (a new epoch's bar, a restart): measure afresh
            if not self._recent or step != self._recent[-1][1]:
                self._recent.append((when, float(step)))
        self._progress = {**ev, **self._speed(ev)}
        self._follow_step(self._progress)

    def _speed(self, ev: Event) -> dict[str, float]:
        """Steps/s over the recent progress events, and the time left at that speed (tqdm's way)."""
        out: dict[str, float] = {}
        if "rate" in ev or len(self._recent) < 2:
            return out
        (t0, s0), (t1, s1) = self._recent[0], self._recent[-1]
        if t1 <= t0 or s1 <= s0:
            return out
        rate = (s1 - s0) / (t1 - t0)
        out["rate"] = rate
        total = ev.get("total")
        if isinstance(total, (int, float)) and total > s1:
            out["eta_s"] = (total - s1) / rate
        return out

    def _follow_step(self, progress: Event) -> None:
        """A step moves ``starting`` to ``training``; the last step moves it to ``finishing``."""
        if self.phase.name is PhaseName.STOPPING:
            return
        step, total = progress.get("step"), progress.get("total")
        done = isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0 and step >= total
        when = _when(progress)
        if done:
            if self.phase.name is not PhaseName.FINISHING:
                self.set_phase(PhaseName.FINISHING, "after the last step", when)
        elif self.phase.name is PhaseName.STARTING or (
            self.phase.name is PhaseName.FINISHING and not self._phase_set_by_trainer
        ):
            # a bar that starts over (the next epoch's) means training goes on; so does the first step
            self.set_phase(PhaseName.TRAINING, None, when)
        elif self.phase.name is PhaseName.TRAINING and self.phase.detail:
            self.set_phase(PhaseName.TRAINING, None, when)  # "validating epoch 1" is over: steps move again


def _when(ev: Mapping[str, Any]) -> float:
    t = ev.get("time")
    return float(t) if isinstance(t, (int, float)) else time.time()


__all__ = ["Phase", "PhaseName", "RunState", "phase_event"]
