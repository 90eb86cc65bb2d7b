"""Launch overhead: ``nbexec train`` of a no-op 2-rank script vs bare torchrun.

    python bench/launch_overhead.py [--repeats 15] [--nproc 2] [--warmup 1]

Both commands run the same no-op script (it reads RANK and exits), so the
difference is what nbexec adds around torchrun: its own Python start and
imports, config/plan/checks, the run dir, the job guard process, the worker
bootstrap and the log pump.

    nbexec:   python -m nbexec train --entrypoint noop.py --nproc 2 --quiet --output TMP
    baseline: python -m torch.distributed.run --standalone --nproc-per-node 2 noop.py

Runs alternate (baseline, nbexec, nbexec, baseline, ...) to spread noise;
the first ``--warmup`` pair is not counted. Target: median nbexec/bare <= 1.10.

``nbexec train`` opens an MLflow run by default (embedded SQLite store
./mlflow.db in the working directory, here the temp dir; MLFLOW_* variables
are removed from the environment so nothing goes elsewhere). The same command
with ``--no-tracking`` is timed too (informational; ``--skip-no-tracking``
leaves it out), so the launcher's own cost and MLflow's are seen apart.

``--breakdown`` also times, in the same alternation, the steps in between
(informational, no target), each adding one piece of nbexec's launch:

    torchrun + nbexec rdzv args   torchrun with the arguments nbexec passes
                                  (c10d rendezvous on 127.0.0.1:0, --rdzv-id,
                                  --max-restarts 0) instead of --standalone
    + worker bootstrap            ... -m nbexec.child.bootstrap noop.py (its
                                  socket is not set, so ranks keep stdout)
    + job guard                   python -I -S .../nbexec/runner/guard.py <the above>
    nbexec train --no-tracking    the CLI process itself: its start and imports,
                                  config/plan/checks, run-dir files, the log pump
    nbexec train                  + the MLflow run (import, store, artifacts)

``--kernel`` also times ``nbexec.launch()`` + ``result()`` from one long-lived
Python process that has imported nbexec and MLflow and launched once before,
as a notebook kernel has: the MLflow import and store set-up are paid once per
kernel, not per job, so this is the overhead a notebook user sees per run
(timed inside that process, from the call to the result; tracking on).

``--floor`` also times MLflow's own client in a fresh process opening and
ending one run in the same SQLite store, with no job at all: the least that
``nbexec train`` with tracking can cost if it uses MLflow's client.

``--pycache`` gives every command a private bytecode cache in the temp dir
(PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE unset), for environments where
PYTHONDONTWRITEBYTECODE=1 makes each process recompile nbexec from source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from _common import CommandFailed, bench_env, median, noise_note, print_header, print_table, run_timed, verdict

from nbexec.runner.process import GUARD_ARGV

TARGET = 1.10
NO_TRACKING = "nbexec train --no-tracking"

NOOP = """\
import os

rank = int(os.environ["RANK"])
"""

KERNEL = "nbexec.launch (warm kernel)"
# A stand-in for a notebook kernel: imports once, then launches a job per line read.
WARM_WORKER = """\
import json, sys, time
import mlflow  # noqa: F401 - already imported in a kernel that tracked a run before
import nbexec
from nbexec.tracking import setup_mlflow

script, out_dir, nproc = sys.argv[1], sys.argv[2], int(sys.argv[3])
setup_mlflow()  # ./mlflow.db, as nbexec train uses
print("ready", flush=True)
for _ in sys.stdin:
    t0 = time.perf_counter()
    nbexec.launch(entrypoint=script, output_dir=out_dir, nproc=nproc).result()
    print(json.dumps(time.perf_counter() - t0), flush=True)
"""


FLOOR = "MLflow client alone"
# What any design that opens the run with MLflow's own client in a fresh
# process pays at least: import mlflow, build the SQLite store, create and end
# one run (./mlflow.db of the temp dir, as nbexec train uses). No torchrun.
MLFLOW_FLOOR = """\
from mlflow.tracking import MlflowClient
client = MlflowClient("sqlite:///mlflow.db")
experiment = client.get_experiment_by_name("Default")
run = client.create_run(experiment.experiment_id)
client.set_terminated(run.info.run_id)
"""


class WarmKernel:
    """The long-lived launching process of ``--kernel``."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        import subprocess

        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise CommandFailed(f"the warm launcher did not start (exit {self.proc.wait()})")

    def launch(self) -> float:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise CommandFailed(f"the warm launcher died (exit {self.proc.wait()})")
        return float(json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="measured runs of each command (default 15)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs of each first (default 1)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per command")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the intermediate steps (rdzv args, bootstrap, guard); see above")
    parser.add_argument("--skip-no-tracking", dest="no_tracking_row", action="store_false",
                        help="do not also time `nbexec train --no-tracking`")
    parser.add_argument("--kernel", action="store_true",
                        help="also time nbexec.launch() from a warm, long-lived process (see above)")
    parser.add_argument("--floor", action="store_true",
                        help="also time MLflow's client alone opening and ending one run in a fresh process")
    parser.add_argument("--pycache", action="store_true",
                        help="private bytecode cache for all commands (see above); default: inherited env")
    args = parser.parse_args()
    if args.pycache and args.warmup < 1:
        parser.error("--pycache needs --warmup >= 1 (the first run fills the cache)")

    print_header(
        "launch overhead: nbexec train vs bare torchrun (no-op script)",
        [f"repeats: {args.repeats} (+{args.warmup} warmup) each, nproc {args.nproc}, alternating order",
         "bytecode: " + ("private cache (--pycache)" if args.pycache else
                         f"inherited env (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})")],
    )
    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        script = os.path.join(tmp, "noop.py")
        with open(script, "w") as fh:
            fh.write(NOOP)
        out_dir = os.path.join(tmp, "runs")
        nbexec_argv = [
            sys.executable, "-m", "nbexec", "train", "--entrypoint", script,
            "--nproc", str(args.nproc), "--quiet", "--output", out_dir,
        ]
        bare_argv = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(args.nproc), script,
        ]
        nbexec_nt_argv = [*nbexec_argv, "--no-tracking"]
        commands = {"bare torchrun": bare_argv, "nbexec train": nbexec_argv}
        if args.no_tracking_row:
            commands[NO_TRACKING] = nbexec_nt_argv
        if args.breakdown:
            # the torchrun arguments nbexec uses (see `nbexec train --dry-run`)
            rdzv = [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc-per-node", str(args.nproc), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", "bench", "--max-restarts", "0",
            ]
            boot = [*rdzv, "-m", "nbexec.child.bootstrap", script]
            commands = {
                "bare torchrun": bare_argv,
                "torchrun + nbexec rdzv args": [*rdzv, script],
                "+ worker bootstrap": boot,
                "+ job guard": [*GUARD_ARGV, *boot],
                NO_TRACKING: nbexec_nt_argv,
                "nbexec train": nbexec_argv,
            }
        if args.floor:
            commands[FLOOR] = [sys.executable, "-c", MLFLOW_FLOOR]
        env = bench_env(os.environ)
        if args.pycache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        times: dict[str, list[float]] = {name: [] for name in commands}
        kernel = None
        if args.kernel:
            with open(os.path.join(tmp, "warm_worker.py"), "w") as fh:
                fh.write(WARM_WORKER)
            kernel = WarmKernel([sys.executable, "warm_worker.py", script, out_dir, str(args.nproc)], tmp, env)
            kernel.launch()  # a kernel that launched before: the first job's one-time costs are paid
            times[KERNEL] = []

        for i in range(args.warmup + args.repeats):
            order = list(times) if i % 2 == 0 else list(reversed(times))
            for name in order:
                try:
                    if name == KERNEL:
                        assert kernel is not None
                        t = kernel.launch()
                    else:
                        t = run_timed(commands[name], cwd=tmp, env=env, timeout=args.timeout)
                except CommandFailed as err:
                    print(err, file=sys.stderr)
                    return 1
                # keep the temp dir small (the MLflow store, ./mlflow.db, stays: it persists for users too)
                shutil.rmtree(out_dir, ignore_errors=True)
                shutil.rmtree(os.path.join(tmp, "mlartifacts"), ignore_errors=True)
                if i >= args.warmup:
                    times[name].append(t)
            if i >= args.warmup:
                print(f"  run {i - args.warmup + 1:2d}: " + "  ".join(f"{n} {times[n][-1]:.3f} s" for n in times),
                      flush=True)
        if kernel is not None:
            kernel.close()

    bare = times["bare torchrun"]
    print()
    print_table(
        ["command", "median s", "min s", "max s", "n"],
        [[name, f"{median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}", len(v)] for name, v in times.items()],
    )
    if args.breakdown:
        print("\nbreakdown (median of each step minus the median of the one before):")
        names = list(times)
        for prev, cur in zip(names, names[1:]):
            print(f"  {cur:<28s} {median(times[cur]) - median(times[prev]):+.3f} s")
    print()
    for name in [n for n in (NO_TRACKING, "nbexec train", KERNEL, FLOOR) if n in times]:
        nb = times[name]
        pair_ratios = [n / b for b, n in zip(bare, nb)]
        print(f"{name} - bare: median {median(nb) - median(bare):+.3f} s, min {min(nb) - min(bare):+.3f} s;"
              f" per-pair ratio median {median(pair_ratios):.3f}, range {min(pair_ratios):.3f}..{max(pair_ratios):.3f}")
    print(noise_note(times))
    for name, label in ((NO_TRACKING, " (informational, tracking off)"), ("nbexec train", " (default command)"),
                        (KERNEL, " (per job in a notebook kernel, tracking on)"),
                        (FLOOR, " (informational: no job at all, only MLflow's client in a fresh process)")):
        if name not in times:
            continue
        nb = times[name]
        ratio_med, ratio_min = median(nb) / median(bare), min(nb) / min(bare)
        print(
            f"RATIO {name}/bare (launch, no-op x{args.nproc}){label}: median {ratio_med:.3f}, min {ratio_min:.3f}"
            f"  target <= {TARGET:.2f}: {verdict(ratio_med <= TARGET)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
