"""A real one-node Slurm cluster in a temp dir: munged, slurmctld and slurmd.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (``.ci/run``
installs them). Everything the cluster writes (config, state, spool, logs,
munge socket) lives under one folder; the ports are picked free, so the
cluster never clashes with another one on the machine. Needs root (slurmd
runs jobs as the submitting user and manages cgroups).
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "sacct")
MUNGE_KEY = Path("/etc/munge/munge.key")


def missing_requirements() -> str | None:
    """Why a cluster cannot start here (None when it can)."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        return (f"Slurm/munge not installed (missing: {', '.join(missing)}); "
                "install with: apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd starts jobs as their user)"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} is missing (the munge package creates it)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalSlurmCluster:
    """The daemons of one running cluster; :meth:`stop` ends them all."""

    root: Path
    node: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM every daemon (slurmd first), then SIGKILL what is left after 10 s."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_cluster(root: Path, *, cpus: int = 2, timeout: float = 60.0) -> LocalSlurmCluster:
    """Write the config under ``root``, start the daemons, return once the node is idle.

    Raises:
        RuntimeError: a daemon died or the node never became idle (with the daemon logs).
    """
    node = socket.gethostname().split(".")[0]
    for sub in ("etc", "state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    munge_user = pwd.getpwnam("munge")
    munge_dir = root / "munge"
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    munge_dir.chmod(0o755)  # munged wants the socket dir searchable by all
    munge_socket = munge_dir / "munge.socket"
    ctld_port, slurmd_port = _free_port(), _free_port()
    conf = root / "etc" / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=nbexec-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        "ProctrackType=proctrack/cgroup",  # with linuxproc a detached process survives scancel
        "TaskPlugin=task/cgroup",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin",
        "JobCompType=jobcomp/filetxt",  # sacct -c works without slurmdbd
        f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
        "JobAcctGatherType=jobacct_gather/none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "KillWait=5",  # SIGTERM -> SIGKILL on scancel / time limit
        "MinJobAge=600",  # scontrol still shows a finished job for 10 min
        f"FirstJobId={random.randint(1000, 900_000)}",  # two test clusters on one machine: distinct cgroups
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    (root / "etc" / "cgroup.conf").write_text(
        "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nConstrainCores=no\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = LocalSlurmCluster(root=root, node=node, env=env)
    log = root / "log"
    try:
        cluster.procs["munged"] = _spawn(
            ["munged", "-F", f"--socket={munge_socket}", f"--key-file={MUNGE_KEY}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"],
            env, user=munge_user, out=munge_dir / "munged.out",
        )
        _wait(lambda: munge_socket.exists(), timeout, "munged socket", cluster)
        cluster.procs["slurmctld"] = _spawn(["slurmctld", "-D", "-i", "-f", str(conf)], env,
                                            out=log / "slurmctld.out")
        cluster.procs["slurmd"] = _spawn(["slurmd", "-D", "-f", str(conf), "-N", node], env,
                                         out=log / "slurmd.out")
        _wait(lambda: _node_state(env, node) == "idle", timeout, "node idle in sinfo", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _spawn(argv: list[str], env: dict[str, str], *, out: Path,
           user: pwd.struct_passwd | None = None) -> subprocess.Popen[bytes]:
    argv = [_which(argv[0]) or argv[0], *argv[1:]]
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with open(out, "wb") as fh:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, **kwargs)  # type: ignore[arg-type]


def _node_state(env: dict[str, str], node: str) -> str:
    done = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], env=env, capture_output=True,
                          text=True, timeout=10, check=False)
    return done.stdout.strip()


def _wait(ready: object, timeout: float, what: str, cluster: LocalSlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                   + _logs(cluster))
        time.sleep(0.05)  # polling a condition with a deadline
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n" + _logs(cluster))


def _logs(cluster: LocalSlurmCluster) -> str:
    parts = []
    for path in sorted((cluster.root / "log").glob("*")) + sorted((cluster.root / "munge").glob("*.out")):
        text = path.read_text(errors="replace")[-3000:]
        parts.append(f"--- {path.name}\n{text}")
    return "\n".join(parts)
