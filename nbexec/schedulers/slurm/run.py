"""The submitter's side of a Slurm job: submit, follow, stream, cancel, result.

:class:`SlurmRun` is a :class:`~nbexec.runner.handle.TrainingRun` whose
"process" is a Slurm job: the same status / wait / result / cancel / lines /
events, the same sinks (notebook view, terminal, MLflow metrics) and the
same ``result.json``, with Slurm's final state folded in (CANCELLED ->
KILLED; TIMEOUT, OUT_OF_MEMORY, NODE_FAIL -> FAILED with that as the cause).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbexec import contract
from nbexec.errors import RootCause
from nbexec.plan import LaunchPlan
from nbexec.result import RunStatus
from nbexec.runner.handle import DRAIN_TIMEOUT, Finalizer, TrainingRun
from nbexec.runner.sinks import Sink
from nbexec.schedulers import node_run_dirs
from nbexec.schedulers.filetail import FileTailPump
from nbexec.schedulers.multinode_run import find_job_root_cause
from nbexec.schedulers.slurm import commands
from nbexec.schedulers.slurm.script import (
    SCRIPT_FILE,
    SPEC_FILE,
    build_sbatch_script,
    slurm_dir,
    spec_json,
)

POLL_S = 0.5  # how often squeue is asked (the files are tailed every 0.2 s)
JOB_ID_FILE = "job_id"
_STATE_CAUSES = {
    "TIMEOUT": "the job hit its time limit (launch.slurm.time)",
    "OUT_OF_MEMORY": "the job ran out of memory (launch.slurm.mem)",
    "NODE_FAIL": "a node of the job failed",
    "PREEMPTED": "the job was preempted",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "the job reached its deadline",
}


class SlurmJob:
    """A submitted job seen like a process: ``poll()`` is None until it is over."""

    def __init__(self, job_id: str, env: Mapping[str, str]) -> None:
        self.job_id = job_id
        self.pid = None  # not a local process
        self._env = dict(env)
        self._next = 0.0
        self._lock = threading.Lock()
        self.state: commands.JobState | None = None
        self.last_seen = "PENDING"

    def poll(self) -> int | None:
        with self._lock:
            if self.state is not None:
                return self._code()
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + POLL_S
            queued = commands.squeue_state(self.job_id, self._env)
            if queued is not None:
                self.last_seen = queued
                return None
            state = commands.final_state(self.job_id, self._env)
            if state.state not in commands.TERMINAL and state.state != "UNKNOWN":
                # squeue said nothing (under load it can time out: "Socket timed out on
                # send/recv operation") while the controller still has the job running
                # or completing: not over yet.
                self.last_seen = state.state
                return None
            self.state = state
            return self._code()

    def _code(self) -> int:
        assert self.state is not None
        code = self.state.returncode
        if code is None:
            return 0 if self.state.state == "COMPLETED" else 1
        return code if code != 0 or self.state.state == "COMPLETED" else 1

    def wait(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(POLL_S / 5)
        return code


class SlurmRun(TrainingRun):
    """A training job running under Slurm. Create it with :func:`submit_slurm`."""

    def __init__(self, plan: LaunchPlan, sinks: Sequence[Sink] = (), finalizers: Sequence[Finalizer] = ()) -> None:
        super().__init__(plan, sinks=sinks, finalizers=finalizers)
        self._job: SlurmJob | None = None

    @property
    def job_id(self) -> str | None:
        """Slurm's job id (None before submission)."""
        return self._job.job_id if self._job else None

    @property
    def slurm_state(self) -> str | None:
        """Slurm's state name: PENDING, RUNNING, ... COMPLETED, CANCELLED, FAILED."""
        if self._job is None:
            return None
        return self._job.state.state if self._job.state else self._job.last_seen

    def _start(self) -> None:
        plan = self.plan
        folder = slurm_dir(plan.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / SCRIPT_FILE
        script.write_text(build_sbatch_script(plan))
        (folder / SPEC_FILE).write_text(spec_json(plan))
        self._pump = FileTailPump(  # type: ignore[assignment]
            plan.run_dir, self._dispatcher, on_events=self._record_events,
            dirs=lambda: node_run_dirs(plan.run_dir),
            launcher_files=lambda: sorted(folder.glob("slurm-*.out")),
        )
        self.started_at = time.time()
        job_id = commands.sbatch(script, plan.env)
        (folder / JOB_ID_FILE).write_text(job_id + "\n")
        self._job = self._proc = SlurmJob(job_id, plan.env)
        self._status = RunStatus.RUNNING
        self._dispatcher.start(self)
        self._thread = threading.Thread(target=self._supervise, name=f"nbexec-slurm-{job_id}", daemon=True)
        self._thread.start()

    def _final_status(self, exit_code: int) -> RunStatus:
        state = self._job.state.state if self._job and self._job.state else "UNKNOWN"
        if self._cancel_requested or state == "CANCELLED":
            return RunStatus.KILLED
        return RunStatus.FINISHED if state == "COMPLETED" and exit_code == 0 else RunStatus.FAILED

    def _root_cause(self, exit_code: int) -> RootCause:
        state = self._job.state if self._job else None
        if state is not None and state.state in _STATE_CAUSES:
            reason = f" ({state.reason})" if state.reason else ""
            return RootCause(rank=None, exit_code=exit_code,
                             message=f"Slurm job {self.job_id} {state.state}: {_STATE_CAUSES[state.state]}{reason}")
        cause = find_job_root_cause(self.plan.run_dir, exit_code)  # the earliest on any node
        if cause.rank is None:  # nothing from the ranks: say what Slurm saw
            where = f"; see {slurm_dir(self.plan.run_dir)}/slurm-{self.job_id}.out"
            return RootCause(rank=None, exit_code=exit_code,
                             message=f"Slurm job {self.job_id} {state.state if state else 'FAILED'}: "
                             f"{cause.message}{where}")
        return cause

    def cancel(self, grace: float = 10.0) -> None:
        """``scancel`` the job and wait until Slurm reports it over (all processes gone).

        Idempotent; the run ends KILLED.
        """
        with self._lock:
            if self._done.is_set() or self._job is None:
                return
            self._cancel_requested = True
        commands.scancel(self._job.job_id, self.plan.env)
        self._done.wait(DRAIN_TIMEOUT + grace)

    def log_path(self, rank: int | None = 0) -> Path:
        if rank is None:
            return self.plan.log_dir / contract.LAUNCHER_LOG
        for run_dir in node_run_dirs(self.plan.run_dir):
            path = contract.rank_log_path(run_dir, rank)
            if path.exists():
                return path
        return contract.rank_log_path(self.plan.run_dir, rank)

    def __repr__(self) -> str:
        return (f"<SlurmRun {self.name!r} job {self.job_id} {self.slurm_state or self._status.value}, "
                f"{self.plan.config.launch.nnodes} node(s) x {self.plan.nproc}x{self.plan.backend}>")


def submit_slurm(plan: LaunchPlan, *, sinks: Sequence[Sink] = (), finalizers: Sequence[Finalizer] = ()) -> SlurmRun:
    """Submit ``plan`` as an sbatch job; returns its handle at once (status RUNNING).

    The MLflow run (unless tracking is off) is opened here, by the submitting
    process, and handed to the job through its environment; it ends with the
    job's outcome.

    Raises:
        EnvironmentCheckError: Slurm's tools are missing, or sbatch refused the job (its
            message), could not be run or printed no job id; nothing was submitted.
        TrackingError: the MLflow store is unreachable (nothing submitted).
    """
    commands.check_tools(plan.env)
    tracked: Any = None
    sinks, finalizers = list(sinks), list(finalizers)
    if plan.config.tracking.enabled:
        from nbexec.tracking import (
            create_training_mlflow_run,
            tracking_finalizer,
            with_tracking_env,
        )

        tracked = create_training_mlflow_run(plan=plan)
        parent_logs = plan.config.tracking.metrics_from == "parent"
        plan = with_tracking_env(plan, tracked, child_metrics=not parent_logs)
        if parent_logs:
            sinks.append(tracked.metrics_sink())
        finalizers.insert(0, tracking_finalizer(tracked))
    from nbexec.executor import start_run

    return start_run(plan, lambda: SlurmRun(plan, sinks=sinks, finalizers=finalizers), tracked)  # type: ignore[return-value]


__all__ = ["SlurmJob", "SlurmRun", "submit_slurm"]
