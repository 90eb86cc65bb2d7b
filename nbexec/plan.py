"""The launch plan: config + hardware -> torchrun argv, child environment, run dir.

Everything here is pure: nothing is spawned, created or written. The runner
turns a :class:`LaunchPlan` into processes; ``--dry-run`` prints it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbexec.contract as contract
from nbexec.config import BUILTIN_TRAINER_MODULE, LaunchConfig, TrainingConfig, load_config
from nbexec.hardware import HardwareInfo, detect_hardware
from nbexec.redact import redact_argv, redact_env, split_secrets

BOOTSTRAP_MODULE = "nbexec.child.bootstrap"
# Inherited variables that would confuse a nested launch (nbexec started from
# inside a torchrun worker, e.g. an HPO driver running as a job).
_STALE_VARS = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_ERROR_FILE",
)
# Inherited variables worth recording in command.txt (they change what runs).
# (launch, nproc=, run_name=) -> torchrun's rendezvous arguments, or None for one node here
Rendezvous = Callable[..., "list[str] | None"]
_RECORDED_PREFIXES = ("CUDA_", "NCCL_", "OMP_", "MKL_", "TORCH_", "GLOO_", "NBEXEC_", "MLFLOW_")


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one training job, decided before anything runs.

    Attributes:
        argv: the whole command, starting with the Python that runs torchrun.
        env: the complete child environment.
        env_set: the variables nbexec set on top of the inherited environment.
        run_dir: ``<output_dir>/<run_name>``, absolute.
    """

    config: TrainingConfig
    run_name: str
    run_dir: Path
    nproc: int
    backend: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    env_set: Mapping[str, str] = field(repr=False)  # may hold secrets; see recorded_env()
    hardware: HardwareInfo = field(repr=False)
    resume_from: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.run_dir / contract.CONFIG_FILE

    @property
    def events_path(self) -> Path:
        return self.run_dir / contract.EVENTS_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_dir / contract.LOG_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / contract.CHECKPOINT_DIR

    def recorded_env(self) -> dict[str, str]:
        """The non-secret environment worth writing down: nbexec's and relevant inherited vars."""
        picked = {k: v for k, v in self.env.items() if k.startswith(_RECORDED_PREFIXES)}
        picked.update(self.env_set)
        return redact_env(dict(sorted(picked.items())))

    def describe(self) -> str:
        """Human-readable plan, as printed by ``--dry-run``."""
        env_lines = "\n".join(f"  {k}={v}" for k, v in self.recorded_env().items())
        return (
            f"run name:   {self.run_name}\n"
            f"run dir:    {self.run_dir}\n"
            f"processes:  {self.nproc} ({self.backend})\n"
            f"hardware:   {self.hardware.summary()}\n"
            f"config:     {self.config.config_hash}\n"
            f"command:\n  {shlex.join(redact_argv(self.argv))}\n"
            f"environment:\n{env_lines}"
        )


def resolve_nproc(config: TrainingConfig, hardware: HardwareInfo | None = None) -> int:
    """Number of processes: the config's, or for ``auto`` one per visible GPU.

    On CPU, ``auto`` is ``min(2, CPUs)``: two gloo ranks exercise DDP for real,
    more rarely speeds up CPU training on one machine.
    """
    if config.launch.nproc != "auto":
        return int(config.launch.nproc)
    hardware = hardware or detect_hardware()
    if resolve_backend(config, hardware) == "nccl":
        return max(1, hardware.gpu_count)
    return max(1, min(2, hardware.cpu_count))


def resolve_backend(config: TrainingConfig, hardware: HardwareInfo | None = None) -> str:
    """``nccl`` when GPUs are visible (or asked for), else ``gloo``."""
    if config.launch.backend != "auto":
        return str(config.launch.backend)  # the plain name (plans and argv hold text)
    hardware = hardware or detect_hardware()
    return "nccl" if hardware.has_gpu else "gloo"


def should_use_ddp(config: TrainingConfig | Mapping | None, hardware: HardwareInfo | None = None) -> bool:
    """True when the job runs more than one process (so DDP wraps the model)."""
    cfg = config if isinstance(config, TrainingConfig) else load_config(config)
    return resolve_nproc(cfg, hardware) > 1


def make_run_name(
    config: TrainingConfig, now: float | None = None, taken: Callable[[str], bool] | None = None
) -> str:
    """``output.run_name``, or a name from the project's naming policy (see :mod:`nbexec.naming`)."""
    from nbexec.naming import build_training_run_name_with_fallback

    return build_training_run_name_with_fallback(config, now=now, taken=taken)


def build_training_command(
    config: TrainingConfig,
    *,
    nproc: int | None = None,
    run_name: str | None = None,
    python: str | None = None,
    rendezvous: Sequence[str] | None = None,
) -> list[str]:
    """The full torchrun argv for one node.

    ``python -m torch.distributed.run`` (the interpreter running nbexec, not
    whatever ``torchrun`` is first on PATH) with a c10d rendezvous on
    127.0.0.1 port 0: the OS picks a free port, so two jobs never collide.
    Each rank starts in nbexec's bootstrap, which then runs the script or
    module exactly as ``python`` would; script args pass through untouched.

    Args:
        rendezvous: torchrun's ``--nnodes ... --rdzv-*`` arguments when they are
            not one node on this machine (a scheduler's
            :meth:`~nbexec.schedulers.api.Scheduler.rendezvous_args`).
    """
    launch = config.launch
    nproc = nproc if nproc is not None else resolve_nproc(config)
    run_name = run_name or make_run_name(config)
    if launch.entrypoint is not None:
        target = [launch.entrypoint]
    else:
        target = ["-m", launch.target_module or BUILTIN_TRAINER_MODULE]
    if rendezvous is None:
        rendezvous = torchrun_rendezvous(launch, nproc=nproc, run_name=run_name)
    return [
        python or sys.executable,
        "-m", "torch.distributed.run",
        *rendezvous,
        "--max-restarts", str(launch.max_restarts),
        "-m", BOOTSTRAP_MODULE,
        *target,
        *launch.args,
    ]


def torchrun_rendezvous(launch: LaunchConfig, *, nproc: int, run_name: str) -> list[str]:
    """torchrun's ``--nnodes ... --rdzv-*`` arguments for machines nbexec's agents run on.

    One node: a c10d rendezvous on 127.0.0.1 port 0 (the OS picks a free port,
    so two jobs never collide). Several nodes (``launch.nnodes``), each running
    its own agent: they meet at node 0's ``launch.rdzv_endpoint`` under one
    ``rdzv_id``. Two facts of torchrun's c10d rendezvous shape that:

    - ``--node-rank`` is ignored by c10d (torchrun warns): node 0 is made the
      rendezvous *host* with ``--rdzv-conf is_host=1`` (the others ``is_host=0``).
    - global ranks go to nodes sorted by their address (then pid), not by node
      rank. Node 0 passes ``--local-addr`` = the rendezvous host, an address
      that sorts before host names, so global rank 0 (the rank that saves the
      checkpoint and reports metrics) normally runs on node 0, where the MLflow
      run is.

    Schedulers whose cluster starts the agents (Slurm, AzureML) give their own
    (:meth:`nbexec.schedulers.api.Scheduler.rendezvous_args`).
    """
    rdzv_id = launch.rdzv_id or run_name
    common = ["--nnodes", str(launch.nnodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
    if not launch.is_multinode:
        return [*common, "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", rdzv_id]
    assert launch.rdzv_endpoint is not None  # checked with the config
    host = launch.rdzv_endpoint.rpartition(":")[0].strip("[]")
    args = [*common, "--rdzv-endpoint", launch.rdzv_endpoint, "--rdzv-id", rdzv_id]
    if launch.node_rank == 0:
        return [*args, "--rdzv-conf", "is_host=1", "--local-addr", host]
    return [*args, "--rdzv-conf", "is_host=0"]


def setup_training_environment(
    config: TrainingConfig,
    run_dir: Path,
    *,
    nproc: int,
    backend: str,
    run_name: str,
    base_env: Mapping[str, str] | None = None,
    hardware: HardwareInfo | None = None,
    resume_from: Path | None = None,
) -> dict[str, str]:
    """The complete child environment: inherited env + the parent -> child contract.

    ``CUDA_VISIBLE_DEVICES`` and a user's ``OMP_NUM_THREADS`` are kept;
    ``launch.env`` is applied last. The caller's mapping is not modified.
    """
    base = dict(os.environ if base_env is None else base_env)
    env = {k: v for k, v in base.items() if k not in _STALE_VARS and not k.startswith("NBEXEC_")}
    run_dir = Path(run_dir)
    env_set = {
        contract.ENV_RUN_DIR: str(run_dir),
        contract.ENV_RUN_NAME: run_name,
        contract.ENV_CONFIG: str(run_dir / contract.CONFIG_FILE),
        contract.ENV_EVENTS: str(run_dir / contract.EVENTS_FILE),
        contract.ENV_CHECKPOINT_DIR: str(run_dir / contract.CHECKPOINT_DIR),
        contract.ENV_BACKEND: backend,
        "PYTHONUNBUFFERED": "1",
    }
    if resume_from is not None:
        env_set[contract.ENV_RESUME_FROM] = str(resume_from)
    if config.launch.omp_num_threads is not None:
        env_set["OMP_NUM_THREADS"] = str(config.launch.omp_num_threads)
    elif "OMP_NUM_THREADS" not in env:
        # torchrun would force 1 (and warn); share the cores between ranks instead
        cpus = (hardware or detect_hardware()).cpu_count
        env_set["OMP_NUM_THREADS"] = str(max(1, cpus // max(1, nproc)))
    if config.launch.stall_timeout > 0:  # a rank falling behind the others is seen from its progress events
        env_set[contract.ENV_PROGRESS_ALL_RANKS] = "1"
    if config.launch.collective_timeout is not None:  # the child API's process group; other scripts read it
        env_set[contract.ENV_COLLECTIVE_TIMEOUT] = f"{config.launch.collective_timeout:g}"
    _, config_secrets = split_secrets(config.to_dict())
    if config_secrets:  # config.yaml is written redacted; the child gets the values here
        env_set[contract.ENV_CONFIG_SECRETS] = json.dumps(config_secrets)
    env_set.update(config.launch.env)
    env.update(env_set)
    return env


def plan_training(
    config: TrainingConfig,
    *,
    output_dir: str | Path | None = None,
    run_name: str | None = None,
    hardware: HardwareInfo | None = None,
    base_env: Mapping[str, str] | None = None,
    resume_from: str | Path | None = None,
    rendezvous: Rendezvous | None = None,
) -> LaunchPlan:
    """Decide everything about a launch: processes, backend, argv, env, run dir.

    Args:
        rendezvous: ``(launch, nproc=, run_name=) -> args or None``, torchrun's
            rendezvous for more than one node on this machine (a scheduler's).
    """
    hardware = hardware or detect_hardware(base_env)
    nproc = resolve_nproc(config, hardware)
    backend = resolve_backend(config, hardware)
    if run_name is not None:
        config = load_config(config, overrides=[f"output.run_name={json.dumps(run_name)}"])
    root = Path(output_dir if output_dir is not None else config.output.dir).absolute()
    name = make_run_name(config, taken=lambda candidate: (root / candidate).exists())
    run_dir = root / name
    resume = Path(resume_from).absolute() if resume_from is not None else None
    base = dict(os.environ if base_env is None else base_env)
    env = setup_training_environment(
        config, run_dir, nproc=nproc, backend=backend, run_name=name,
        base_env=base, hardware=hardware, resume_from=resume,
    )
    env_set = {k: v for k, v in env.items() if base.get(k) != v}
    rdzv = rendezvous(config.launch, nproc=nproc, run_name=name) if rendezvous is not None else None
    argv = build_training_command(config, nproc=nproc, run_name=name, rendezvous=rdzv)
    return LaunchPlan(
        config=config, run_name=name, run_dir=run_dir, nproc=nproc, backend=backend,
        argv=tuple(argv), env=env, env_set=env_set, hardware=hardware, resume_from=resume,
    )
