"""Every rank's stacks at one moment: take them, save them, read the last ones back.

    snap = take_stacks(run_dir)          # signals the ranks, waits for their dumps (well under a second)
    snap.path                            # logs/stacks-<time>.txt
    snap.waiting                         # {0: "all_reduce"}: ranks inside a collective
    snap.not_waiting                     # [1]: ranks that are not (the likely stuck ones)
    print(snap)                          # the ranks side by side (nbexec.render.stacks)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbexec.contract as contract
from nbexec.errors import NbexecError
from nbexec.stacks.parse import Frame, ThreadStack, parse_dump  # noqa: F401 - ThreadStack: re-exported
from nbexec.stacks.request import (
    DUMP_TIMEOUT_S,
    RawDump,
    dump_is_whole,
    rank_processes,
    request_dumps,
    split_dumps,
)

PY_SPY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class RankStacks:
    """One rank's stacks.

    Attributes:
        threads: every Python thread, the main one last (faulthandler's order).
        complete: the dump is whole (False: cut off by the deadline).
        error: why there are no stacks (the rank is not running...), else "".
        native: ``py-spy dump --native`` of the rank, when asked for (or why not).
    """

    rank: int
    pid: int | None
    threads: tuple[ThreadStack, ...] = ()
    taken_at: float = 0.0
    complete: bool = True
    error: str = ""
    native: str = ""

    @property
    def main(self) -> ThreadStack | None:
        """The main thread (where the training loop runs), if it was dumped."""
        return next((t for t in self.threads if t.main), None)

    @property
    def collective(self) -> str | None:
        """The collective the main thread waits in (``all_reduce``), or None."""
        main = self.main
        return main.collective if main is not None else None

    @property
    def frame(self) -> Frame | None:
        """Where the main thread is in the user's code (else its innermost frame)."""
        main = self.main
        if main is None or not main.frames:
            return None
        return main.user_frame or main.shown_frames[0]

    def where(self) -> str:
        """One line: ``in all_reduce, called from train.py:10`` / ``at train.py:8 in <module>: time.sleep(60)``."""
        frame = self.frame
        if frame is None:
            return f"no stacks: {self.error}" if self.error else "no stacks"
        code = f": {frame.source}" if frame.source else ""
        if self.collective is not None:
            return f"in {self.collective}, called from {frame.location}{code}"
        return f"at {frame.location} in {frame.function}{code}"


@dataclass(frozen=True)
class StackSnapshot:
    """The stacks of a job's ranks, taken together.

    Attributes:
        run_dir: the job's run directory.
        taken_at: when they were asked for (``time.time()``).
        ranks: one entry per rank asked, in rank order.
        path: ``logs/stacks-<time>.txt`` once saved.
    """

    run_dir: Path
    taken_at: float
    ranks: tuple[RankStacks, ...] = ()
    path: Path | None = None
    notes: tuple[str, ...] = field(default=())

    def rank(self, rank: int) -> RankStacks:
        """One rank's stacks.

        Raises:
            KeyError: that rank was not asked.
        """
        for item in self.ranks:
            if item.rank == rank:
                return item
        raise KeyError(f"rank {rank} is not in these stacks (ranks {[r.rank for r in self.ranks]})")

    @property
    def waiting(self) -> dict[int, str]:
        """Ranks whose main thread is inside a collective: rank -> the collective."""
        return {r.rank: r.collective for r in self.ranks if r.collective is not None}

    @property
    def not_waiting(self) -> list[int]:
        """Ranks with stacks whose main thread is in no collective: while others wait, the stuck ones."""
        return [r.rank for r in self.ranks if r.main is not None and r.collective is None]

    def summary_lines(self) -> list[str]:
        """``rank 0: in all_reduce, called from train.py:10`` for every rank."""
        return [f"rank {r.rank}: {r.where()}" for r in self.ranks]

    def to_text(self) -> str:
        """The saved file: a summary, then each rank's threads in full (most recent call first)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.taken_at))
        out = [f"# nbexec stacks of {self.run_dir.name}, taken {stamp}", *self.notes, "", *self.summary_lines()]
        for r in self.ranks:
            out += ["", f"=== rank {r.rank}" + (f" (pid {r.pid})" if r.pid else "")
                    + ("" if r.complete else " (incomplete dump)")]
            if r.error:
                out.append(f"  {r.error}")
            for thread in sorted(r.threads, key=lambda t: not t.main):
                out.append(thread.title + " (most recent call first):")
                out += [f"  {f.function}  {f.location}" + (f"    {f.source}" if f.source else "") for f in thread.frames]
                if thread.truncated:
                    out.append("  ... (more frames not dumped)")
            if r.native:
                out += ["", f"--- rank {r.rank}: py-spy dump --native", r.native.rstrip()]
        return "\n".join(out) + "\n"

    def save(self, log_dir: Path | None = None) -> StackSnapshot:
        """Write :meth:`to_text` to ``logs/stacks-<time>.txt``; returns the snapshot with ``path`` set."""
        folder = log_dir or self.run_dir / contract.LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stem = contract.STACKS_FILE_PREFIX + time.strftime("%Y%m%d-%H%M%S", time.localtime(self.taken_at))
        path = folder / f"{stem}.txt"
        n = 2
        while path.exists():
            path, n = folder / f"{stem}-{n}.txt", n + 1
        path.write_text(self.to_text(), encoding="utf-8")
        return replace(self, path=path)

    def __str__(self) -> str:
        from nbexec.render.stacks import stacks_text

        return stacks_text(self)

    def _repr_html_(self) -> str:
        from nbexec.render.stacks import stacks_html

        return stacks_html(self)

    def __repr__(self) -> str:
        where = "; ".join(self.summary_lines())
        return f"<StackSnapshot {self.run_dir.name}: {where}>"


def take_stacks(
    run_dir: str | Path,
    ranks: Iterable[int] | None = None,
    *,
    native: bool = False,
    timeout: float = DUMP_TIMEOUT_S,
    save: bool = True,
) -> StackSnapshot:
    """Take the stacks of a running job's ranks now, without stopping it.

    Args:
        run_dir: the job's run directory (each rank recorded itself there).
        ranks: which ranks (None: all of them).
        native: also ``py-spy dump --native`` each rank (C/C++ frames too; needs py-spy).
        timeout: seconds to wait for the dumps.
        save: write them to ``logs/stacks-<time>.txt``.

    Returns:
        The :class:`StackSnapshot` (``path`` set when saved).

    Raises:
        NbexecError: no rank of the job has recorded itself (not started yet, or not a run dir).
    """
    run_dir = Path(run_dir)
    if not rank_processes(run_dir):
        raise NbexecError(
            f"no rank of the job in {run_dir} can be asked for its stacks: none has recorded "
            f"{contract.LOG_DIR}/rank<N>.process.json. The ranks have not started yet (try again in a moment), "
            "this is not an nbexec run directory, or the job ran with NBEXEC_STACKS=0"
        )
    started = time.time()
    raw = request_dumps(run_dir, ranks, timeout=timeout)
    natives = _py_spy_dumps({r: d.pid for r, d in raw.items() if d.pid}) if native else {}
    snapshot = StackSnapshot(
        run_dir=run_dir,
        taken_at=started,
        ranks=tuple(_rank_stacks(dump, natives.get(rank, "")) for rank, dump in raw.items()),
    )
    return snapshot.save() if save else snapshot


def latest_stacks(run_dir: str | Path, *, since: float | None = None) -> StackSnapshot | None:
    """The last whole dump each rank wrote (taken at ``since`` or later), or None when there is none.

    What a root cause reads after the job is over: the ranks are gone, their dumps stay.
    """
    run_dir = Path(run_dir)
    found = []
    for rank, record in rank_processes(run_dir).items():
        try:
            text = contract.rank_stacks_path(run_dir, rank).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for taken, body in reversed(split_dumps(text)):
            if since is not None and taken < since:
                break
            if dump_is_whole(body, record.main_thread, record.last_frame):
                found.append(_rank_stacks(RawDump(rank, record.pid, body, taken, True, "", record.main_thread)))
                break
    if not found:
        return None
    return StackSnapshot(run_dir=run_dir, taken_at=min(r.taken_at for r in found), ranks=tuple(found))


def _rank_stacks(dump: RawDump, native: str = "") -> RankStacks:
    return RankStacks(
        rank=dump.rank, pid=dump.pid, threads=parse_dump(dump.text, dump.main_thread), taken_at=dump.taken_at,
        complete=dump.complete, error=dump.error, native=native,
    )


def py_spy() -> str | None:
    """The ``py-spy`` program: on PATH, or beside this Python (a venv not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def _py_spy_dumps(pids: dict[int, int]) -> dict[int, str]:
    """``py-spy dump --native`` of each rank, run together; the text, or why there is none."""
    exe = py_spy()
    if exe is None:
        return {r: "native frames unavailable: py-spy is not installed (pip install 'nbexec[stacks]')" for r in pids}
    procs = {r: subprocess.Popen([exe, "dump", "--native", "--pid", str(pid)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
             for r, pid in pids.items()}
    out = {}
    for rank, proc in procs.items():
        try:
            text, _ = proc.communicate(timeout=PY_SPY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
            text = f"py-spy did not answer within {PY_SPY_TIMEOUT_S:g} s\n{text}"
        if proc.returncode not in (0, None):
            text = f"native frames unavailable: py-spy failed (exit {proc.returncode}): {text.strip()[-500:]}"
        out[rank] = text
    return out
