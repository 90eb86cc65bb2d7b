"""Slurm's command-line tools, as argv lists: submit, query, cancel.

The tools are found on PATH; ``SLURM_CONF`` in the environment picks the
cluster, as it does for a person at the terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nbexec.errors import EnvironmentCheckError, NbexecError

TOOLS = ("sbatch", "squeue", "scontrol", "scancel")
TIMEOUT_S = 30.0
# Slurm's terminal job states (squeue/sacct/scontrol spell them the same).
TERMINAL = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
}
_JOB_ID_RE = re.compile(r"^(\d+)(;.*)?$")


@dataclass(frozen=True)
class JobState:
    """A job's state as Slurm reports it; ``exit_code``/``signal`` from ``ExitCode=rc:sig``."""

    state: str
    exit_code: int | None = None
    signal: int = 0
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def returncode(self) -> int | None:
        """Popen-style: the exit code, or minus the signal that killed the batch script."""
        if self.signal:
            return -self.signal
        return self.exit_code


def missing_tools(env: Mapping[str, str] | None = None) -> list[str]:
    path = (env or {}).get("PATH")
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


def check_tools(env: Mapping[str, str] | None = None) -> None:
    """Raises EnvironmentCheckError when Slurm's client tools are not on PATH."""
    missing = missing_tools(env)
    if missing:
        raise EnvironmentCheckError([(
            f"launch.scheduler is slurm but {', '.join(missing)} not found on PATH; run on a Slurm "
            "login node (or install the client: apt-get install slurm-client) or use --scheduler local"
        )])


def _run(argv: list[str], env: Mapping[str, str] | None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=dict(env) if env is not None else None, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise NbexecError(f"{' '.join(argv[:2])} failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()}")
    return done


def sbatch(script: Path, env: Mapping[str, str]) -> str:
    """Submit ``script``; the job inherits ``env`` (``--export=ALL``). Returns the job id.

    Raises:
        EnvironmentCheckError: nothing was submitted: Slurm refused the job (its message,
            e.g. a bad partition), or the ``sbatch`` on PATH could not be run, hung, or
            printed no job id. The message names the batch script, to try by hand.
    """
    tool = shutil.which("sbatch", path=env.get("PATH")) or "sbatch"
    try:
        done = _run(["sbatch", "--parsable", "--export=ALL", str(script)], env, check=False)
    except subprocess.TimeoutExpired:
        raise _not_submitted(f"sbatch ({tool}) did not answer within {TIMEOUT_S:g} s; the Slurm controller may be "
                             "down or overloaded (check with: scontrol ping)", script) from None
    except OSError as err:
        raise _not_submitted(f"sbatch ({tool}) could not be run: {err.strerror or err}; check that it is Slurm's "
                             "sbatch (sbatch --version) and executable", script) from None
    said = (done.stderr or done.stdout).strip()
    if done.returncode != 0:
        raise _not_submitted(
            f"sbatch failed (exit {done.returncode}): {said or '(it printed nothing)'}; check the launch.slurm "
            "options (partition, account, time, gpus_per_node ...) and that sbatch works here", script)
    match = _JOB_ID_RE.match(done.stdout.strip())
    if match is None:
        raise _not_submitted(
            f"sbatch printed no job id: {done.stdout.strip()[:500]!r}; the sbatch first on PATH ({tool}) does not "
            "answer like Slurm's `sbatch --parsable`: check `which sbatch` and `sbatch --version`", script)
    return match.group(1)


def _not_submitted(problem: str, script: Path) -> EnvironmentCheckError:
    return EnvironmentCheckError([f"{problem}. Nothing was submitted; the batch script is {script}"])


def squeue_state(job_id: str, env: Mapping[str, str] | None) -> str | None:
    """The job's state while it is queued, running or completing; None once it left the queue."""
    done = _run(["squeue", "-h", "-j", job_id, "-o", "%T"], env, check=False)
    state = done.stdout.strip().splitlines()
    return state[0].strip() if done.returncode == 0 and state else None


def final_state(job_id: str, env: Mapping[str, str] | None) -> JobState:
    """The state of a job that left the queue: ``scontrol show job``, else ``sacct``."""
    done = _run(["scontrol", "show", "job", "-o", job_id], env, check=False)
    fields = dict(item.partition("=")[::2] for item in done.stdout.split() if "=" in item)
    if done.returncode == 0 and fields.get("JobState"):
        return _state(fields["JobState"], fields.get("ExitCode", ""), fields.get("Reason", ""))
    for argv in (["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode"],
                 ["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State,ExitCode"]):
        if shutil.which("sacct", path=(env or {}).get("PATH")) is None:
            break
        rows = [r for r in _run(argv, env, check=False).stdout.splitlines() if r.strip()]
        if rows:
            state, _, exit_code = rows[-1].partition("|")
            return _state(state.split()[0], exit_code, "")
    return JobState("UNKNOWN", None, 0, "neither scontrol nor sacct knows the job any more")


def _state(state: str, exit_code: str, reason: str) -> JobState:
    code, _, sig = exit_code.partition(":")
    return JobState(
        state=state.split()[0].rstrip("+"),
        exit_code=int(code) if code.isdigit() else None,
        signal=int(sig) if sig.isdigit() else 0,
        reason="" if reason in ("None", "(null)") else reason,
    )


def scancel(job_id: str, env: Mapping[str, str] | None) -> None:
    """Cancel the job (Slurm sends SIGTERM, then SIGKILL after KillWait)."""
    _run(["scancel", job_id], env, check=False)
