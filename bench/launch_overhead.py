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
    + job guard                   python -m nbexec.runner.guard <the above>
    nbexec train --no-tracking    the CLI process itself: its start and imports,
                                  config/plan/checks, run-dir files, the log pump
    nbexec train                  + the MLflow run (import, store, artifacts)

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

TARGET = 1.10
NO_TRACKING = "nbexec train --no-tracking"

NOOP = """\
import os

rank = int(os.environ["RANK"])
"""


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
                "+ job guard": [sys.executable, "-m", "nbexec.runner.guard", *boot],
                NO_TRACKING: nbexec_nt_argv,
                "nbexec train": nbexec_argv,
            }
        env = bench_env(os.environ)
        if args.pycache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        times: dict[str, list[float]] = {name: [] for name in commands}

        for i in range(args.warmup + args.repeats):
            order = list(commands) if i % 2 == 0 else list(reversed(commands))
            for name in order:
                try:
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
                print(f"  run {i - args.warmup + 1:2d}: " + "  ".join(f"{n} {times[n][-1]:.3f} s" for n in commands),
                      flush=True)

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
    for name in [n for n in (NO_TRACKING, "nbexec train") if n in times]:
        nb = times[name]
        pair_ratios = [n / b for b, n in zip(bare, nb)]
        print(f"{name} - bare: median {median(nb) - median(bare):+.3f} s, min {min(nb) - min(bare):+.3f} s;"
              f" per-pair ratio median {median(pair_ratios):.3f}, range {min(pair_ratios):.3f}..{max(pair_ratios):.3f}")
    print(noise_note(times))
    for name, label in ((NO_TRACKING, " (informational, tracking off)"), ("nbexec train", " (default command)")):
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
