"""Streaming throughput: lines/s through nbexec's runner into rank files vs torchrun's own files.

    python bench/streaming.py [--lines 500000] [--repeats 5] [--nproc 2]

Each rank of a flood script (like tests/fixtures/scripts/flood.py) writes N
numbered lines to stdout as fast as it can.

    nbexec:   python -m nbexec train --entrypoint flood.py --nproc 2 --quiet --output TMP -- N
              (rank stdout -> unix socket -> nbexec's pump -> logs/rank{0,1}.log)
    baseline: python -m torch.distributed.run --standalone --nproc-per-node 2
                  --redirects 3 --log-dir TMP/bare flood.py N
              (rank stdout is a file opened by torchrun: <log-dir>/<run id>/attempt_0/<rank>/stdout.log)

After every run the rank files are checked to hold exactly N lines each.
Throughput = nproc*N / wall time of the whole command (launch included).
The "launch-corrected" figures subtract the median wall time of an N=0 run of
the same command, measured in the same session (interleaved with the others).
Target: nbexec/baseline lines/s >= 0.8 (whole command, medians).

``nbexec train`` opens an MLflow run by default (store ./mlflow.db in the
working directory, the temp dir here; MLFLOW_* variables are removed from the
environment) and uploads the run's files, rank logs included, as artifacts
when the job ends. The same command with ``--no-tracking`` is measured too
(informational; ``--skip-no-tracking`` leaves it out), which isolates the
runner's streaming path.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile

from _common import (
    FLOOD,
    CommandFailed,
    bench_env,
    count_lines,
    median,
    noise_note,
    print_header,
    print_table,
    run_measured,
    verdict,
)

TARGET = 0.8
BASELINE, NBEXEC, NBEXEC_NT = "baseline", "nbexec", "nbexec --no-tracking"



class Bench:
    def __init__(self, tmp: str, nproc: int, timeout: float) -> None:
        self.tmp = tmp
        self.nproc = nproc
        self.timeout = timeout
        self.env = bench_env(os.environ)
        self.script = os.path.join(tmp, "flood.py")
        with open(self.script, "w") as fh:
            fh.write(FLOOD)
        self.counter = 0
        self.shown_bare_layout = False
        self.cpu: dict[str, list[float]] = {BASELINE: [], NBEXEC: [], NBEXEC_NT: []}  # CPU s at N > 0

    def run(self, name: str, n: int) -> float:
        if name == BASELINE:
            return self.bare(n)
        return self.nbexec(n, tracking=name == NBEXEC)

    def _fresh_dir(self, kind: str) -> str:
        self.counter += 1
        return os.path.join(self.tmp, f"{kind}-{self.counter}")

    def nbexec(self, n: int, *, tracking: bool) -> float:
        out_dir = self._fresh_dir("nbexec")
        argv = [
            sys.executable, "-m", "nbexec", "train", "--entrypoint", self.script,
            "--nproc", str(self.nproc), "--quiet", "--output", out_dir,
            *([] if tracking else ["--no-tracking"]), "--", str(n),
        ]
        t, cpu = run_measured(argv, cwd=self.tmp, env=self.env, timeout=self.timeout)
        if n:
            self.cpu[NBEXEC if tracking else NBEXEC_NT].append(cpu)
        run_dirs = glob.glob(os.path.join(out_dir, "*", "logs"))
        if len(run_dirs) != 1:
            raise CommandFailed(f"expected one run dir under {out_dir}, found {run_dirs}")
        for rank in range(self.nproc):
            self._check(os.path.join(run_dirs[0], f"rank{rank}.log"), n)
        shutil.rmtree(out_dir)
        # the uploaded copies of the rank logs: keep the temp dir small (./mlflow.db stays)
        shutil.rmtree(os.path.join(self.tmp, "mlartifacts"), ignore_errors=True)
        return t

    def bare(self, n: int) -> float:
        log_dir = self._fresh_dir("bare")
        argv = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(self.nproc), "--redirects", "3", "--log-dir", log_dir,
            self.script, str(n),
        ]
        t, cpu = run_measured(argv, cwd=self.tmp, env=self.env, timeout=self.timeout)
        if n:
            self.cpu[BASELINE].append(cpu)
        for rank in range(self.nproc):
            found = glob.glob(os.path.join(log_dir, "*", "attempt_0", str(rank), "stdout.log"))
            if len(found) != 1:
                raise CommandFailed(f"torchrun's stdout file for rank {rank} not found under {log_dir}: {found}")
            if not self.shown_bare_layout:
                print(f"  (torchrun wrote rank {rank} stdout to {os.path.relpath(found[0], log_dir)} under --log-dir)")
            self._check(found[0], n)
        self.shown_bare_layout = True
        shutil.rmtree(log_dir)
        return t

    @staticmethod
    def _check(path: str, n: int) -> None:
        if not os.path.isfile(path):
            if n == 0:
                return  # nothing was written: no file is fine
            raise CommandFailed(f"missing rank log {path}")
        got = count_lines(path)
        if got != n:
            with open(path, "rb") as fh:
                head = fh.read(500).decode(errors="replace")
            raise CommandFailed(f"{path}: {got} lines, expected {n}; starts with:\n{head}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000, help="lines per rank, N (default 500000)")
    parser.add_argument("--repeats", type=int, default=5, help="measured runs of each command (default 5)")
    parser.add_argument("--zero-repeats", type=int, default=None,
                        help="measured N=0 runs of each command (default: same as --repeats)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted N=0 runs of each first (default 1)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per command")
    parser.add_argument("--skip-no-tracking", dest="no_tracking_row", action="store_false",
                        help="do not also measure `nbexec train --no-tracking`")
    args = parser.parse_args()
    zero_repeats = args.repeats if args.zero_repeats is None else args.zero_repeats
    total = args.nproc * args.lines

    print_header(
        "streaming: lines/s through nbexec into rank files vs torchrun --redirects 3",
        [f"N = {args.lines} lines per rank x {args.nproc} ranks = {total} lines per run; "
         f"repeats {args.repeats} (N=0 runs: {zero_repeats}, +{args.warmup} warmup), alternating order"],
    )
    names = (BASELINE, NBEXEC, NBEXEC_NT) if args.no_tracking_row else (BASELINE, NBEXEC)
    full: dict[str, list[float]] = {n: [] for n in names}
    zero: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        bench = Bench(tmp, args.nproc, args.timeout)
        try:
            for _ in range(args.warmup):
                for name in names:
                    bench.run(name, 0)
            for i in range(max(args.repeats, zero_repeats)):
                order = names if i % 2 == 0 else tuple(reversed(names))
                if i < args.repeats:
                    for name in order:
                        full[name].append(bench.run(name, args.lines))
                if i < zero_repeats:
                    for name in reversed(order):
                        zero[name].append(bench.run(name, 0))
                print(f"  run {i + 1:2d}: " + "  ".join(
                    f"{name} N: {full[name][-1]:.3f} s" + (f", N=0: {zero[name][-1]:.3f} s" if i < zero_repeats else "")
                    for name in names if i < args.repeats
                ), flush=True)
        except CommandFailed as err:
            print(err, file=sys.stderr)
            return 1

    print()
    rows = []
    for name in names:
        f, z = full[name], zero[name]
        rows.append([
            name, f"{median(f):.3f}", f"{min(f):.3f}", f"{median(z):.3f}",
            f"{total / median(f):,.0f}", f"{total / min(f):,.0f}",
            f"{total / (median(f) - median(z)):,.0f}" if median(f) > median(z) else "n/a",
            f"{median(bench.cpu[name]):.2f}",
        ])
    print_table(
        ["command", "wall med s", "wall min s", "N=0 med s", "lines/s (med)", "lines/s (best)",
         "lines/s corrected*", "CPU s med**"],
        rows,
    )
    print("  * corrected = lines / (median wall at N - median wall at N=0): launch overhead subtracted")
    print("  ** user+system CPU of the whole process tree (launcher, ranks, nbexec's pump, MLflow) at N")

    b = full[BASELINE]
    b_stream = median(b) - median(zero[BASELINE])
    print()
    print("streaming time beyond launch (median N minus median N=0): " + ", ".join(
        f"{name} {median(full[name]) - median(zero[name]):.3f} s" for name in names))
    print(noise_note({f"{k} N": v for k, v in full.items()}))
    for name, label in ((NBEXEC_NT, " (informational, tracking off)"), (NBEXEC, " (default command)")):
        if name not in names:
            continue
        nb = full[name]
        ratio_med = median(b) / median(nb)  # (total/nb) / (total/b)
        ratio_best = min(b) / min(nb)
        nb_stream = median(nb) - median(zero[name])
        ratio_corr = b_stream / nb_stream if nb_stream > 0 and b_stream > 0 else None
        print(
            f"RATIO {name}/baseline lines/s{label}, whole command: median {ratio_med:.3f}, best {ratio_best:.3f}"
            f"  target >= {TARGET:.2f}: {verdict(ratio_med >= TARGET)}"
        )
        if ratio_corr is None:
            print(f"RATIO {name}/baseline lines/s{label}, launch-corrected (medians): n/a (N too small: "
                  "streaming time is within launch noise; use a larger --lines)")
        else:
            print(
                f"RATIO {name}/baseline lines/s{label}, launch-corrected (medians): {ratio_corr:.3f}"
                f"  (same target, for information: {verdict(ratio_corr >= TARGET)})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
