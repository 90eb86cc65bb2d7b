"""The submitter's side of a Slurm job: submit it, follow it, stop it, tell how it ended.

:class:`SlurmLauncher` writes the sbatch script and the nodes' launch spec,
runs ``sbatch`` and tails the files the job writes (it runs on other
machines; the run dir is on a shared file system). :class:`SlurmJob` is the
job as the run handle sees it: polled with ``squeue``/``scontrol``, stopped
with ``scancel``, its end read through :data:`SLURM_STATES`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nbexec.errors import NbexecError, RootCause
from nbexec.result import RunStatus
from nbexec.schedulers.filetail import FileTailPump
from nbexec.schedulers.nodes import find_job_root_cause, node_run_dirs
from nbexec.schedulers.slurm import commands
from nbexec.schedulers.slurm.script import SCRIPT_FILE, SPEC_FILE, build_sbatch_script, slurm_dir, spec_json

if TYPE_CHECKING:
    from nbexec.plan import LaunchPlan
    from nbexec.runner.job import PumpFeed

POLL_S = 0.5  # how often squeue is asked (the files are tailed every 0.2 s)
STOP_WAIT_S = 60.0  # after scancel, how long Slurm may take to report the job over (beyond the grace)
JOB_ID_FILE = "job_id"

# Slurm's job states -> the run's status (the one table; anything else ends FAILED)
SLURM_STATES: Mapping[str, RunStatus] = {
    "PENDING": RunStatus.PENDING,
    "CONFIGURING": RunStatus.PENDING,
    "RUNNING": RunStatus.RUNNING,
    "COMPLETING": RunStatus.RUNNING,
    "SUSPENDED": RunStatus.RUNNING,
    "COMPLETED": RunStatus.FINISHED,
    "CANCELLED": RunStatus.KILLED,
    "FAILED": RunStatus.FAILED,
    "TIMEOUT": RunStatus.FAILED,
    "OUT_OF_MEMORY": RunStatus.FAILED,
    "NODE_FAIL": RunStatus.FAILED,
    "PREEMPTED": RunStatus.FAILED,
    "BOOT_FAIL": RunStatus.FAILED,
    "DEADLINE": RunStatus.FAILED,
}
# why a job that ended in these states failed, when no rank recorded it
_STATE_CAUSES = {
    "TIMEOUT": "the job hit its time limit (launch.slurm.time)",
    "OUT_OF_MEMORY": "the job ran out of memory (launch.slurm.mem)",
    "NODE_FAIL": "a node of the job failed",
    "PREEMPTED": "the job was preempted",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "the job reached its deadline",
}


class SlurmLauncher:
    """Submits the plan as an sbatch job and tails what it writes into the run dir."""

    def start(self, plan: LaunchPlan, feed: PumpFeed) -> tuple[SlurmJob, FileTailPump]:
        folder = slurm_dir(plan.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / SCRIPT_FILE
        script.write_text(build_sbatch_script(plan))
        (folder / SPEC_FILE).write_text(spec_json(plan))
        pump = FileTailPump(
            plan.run_dir, feed.dispatcher, on_events=feed.on_events,
            dirs=lambda: node_run_dirs(plan.run_dir),
            launcher_files=lambda: sorted(folder.glob("slurm-*.out")),
        )
        job_id = commands.sbatch(script, plan.env)
        (folder / JOB_ID_FILE).write_text(job_id + "\n")
        return SlurmJob(job_id, plan.env, plan.run_dir), pump


class SlurmJob:
    """A submitted job seen like a process: ``poll()`` is None until Slurm reports it over."""

    pid = None  # not a local process

    def __init__(self, job_id: str, env: Mapping[str, str], run_dir: Path | None = None) -> None:
        self.job_id: str | None = job_id
        self._id = job_id
        self._env = dict(env)
        self._run_dir = run_dir
        self._next = 0.0
        self._lock = threading.Lock()
        self.final: commands.JobState | None = None  # how Slurm says it ended, once it has
        self.last_seen = "PENDING"

    @property
    def state(self) -> str:
        """Slurm's state name: PENDING, RUNNING, ... COMPLETED, CANCELLED, FAILED."""
        return self.final.state if self.final is not None else self.last_seen

    def poll(self) -> int | None:
        with self._lock:
            if self.final is not None:
                return self._code()
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + POLL_S
            queued = commands.squeue_state(self._id, self._env)
            if queued is not None:
                self.last_seen = queued
                return None
            state = commands.final_state(self._id, self._env)
            if state.state not in commands.TERMINAL and state.state != "UNKNOWN":
                # squeue said nothing (under load it can time out: "Socket timed out on
                # send/recv operation") while the controller still has the job running
                # or completing: not over yet.
                self.last_seen = state.state
                return None
            self.final = state
            return self._code()

    def _code(self) -> int:
        assert self.final is not None
        code = self.final.returncode
        if code is None:
            return 0 if self.final.state == "COMPLETED" else 1
        return code if code != 0 or self.final.state == "COMPLETED" else 1

    def finish(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(POLL_S / 5)
        return code

    def stop(self, grace: float) -> None:
        """``scancel`` the job, then wait until Slurm reports it over (all its processes gone)."""
        commands.scancel(self._id, self._env)
        deadline = time.monotonic() + grace + STOP_WAIT_S
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise NbexecError(f"Slurm job {self._id} still not over {grace + STOP_WAIT_S:.0f} s after scancel "
                                  f"(state {self.state}); check it with: squeue -j {self._id}")
            time.sleep(POLL_S / 5)

    def outcome(self, exit_code: int, cancelled: bool) -> tuple[RunStatus, RootCause | None]:
        state = self.state
        if cancelled or SLURM_STATES.get(state) is RunStatus.KILLED:  # scancel by anyone: KILLED
            return RunStatus.KILLED, None
        if SLURM_STATES.get(state) is RunStatus.FINISHED and exit_code == 0:
            return RunStatus.FINISHED, None
        return RunStatus.FAILED, self._root_cause(exit_code)

    def _root_cause(self, exit_code: int) -> RootCause:
        final = self.final
        if final is not None and final.state in _STATE_CAUSES:
            reason = f" ({final.reason})" if final.reason else ""
            return RootCause(rank=None, exit_code=exit_code,
                             message=f"Slurm job {self._id} {final.state}: {_STATE_CAUSES[final.state]}{reason}")
        if self._run_dir is None:
            return RootCause(rank=None, exit_code=exit_code, message=f"Slurm job {self._id} {self.state}")
        cause = find_job_root_cause(self._run_dir, exit_code)  # the earliest on any node
        if cause.rank is None:  # nothing from the ranks: say what Slurm saw
            where = f"; see {slurm_dir(self._run_dir)}/slurm-{self._id}.out"
            return RootCause(rank=None, exit_code=exit_code,
                             message=f"Slurm job {self._id} {final.state if final else 'FAILED'}: "
                             f"{cause.message}{where}")
        return cause


__all__ = ["JOB_ID_FILE", "SLURM_STATES", "SlurmJob", "SlurmLauncher"]
