"""A user's own Hugging Face Trainer script: bare torchrun vs ``nbexec train --entrypoint``.

    python bench/own_script.py [--repeats 3] [--nproc 2]

The script is tests/own_scripts/scripts/hf_trainer.py, unmodified: a tiny
random-init DistilBERT, ``report_to=["mlflow"]``, ``trainer.evaluate()``
after training. Both commands run it in a fresh temp dir with no MLFLOW_*
variables, so MLflow's own default store (./mlflow.db) and nbexec's are the
same file there.

    bare:    python -m torch.distributed.run --standalone --nproc-per-node 2 hf_trainer.py OUT
    nbexec:  python -m nbexec train --entrypoint hf_trainer.py --nproc 2 --quiet -- OUT

Reported per command: median wall time (alternating runs), and how many
MLflow runs one job created, in how many experiments, and how many were left
RUNNING. nbexec's target: one run per job, none left RUNNING; its wall time
is informational (it includes opening and closing the tracked run).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from _common import bench_env, median, noise_note, print_header, print_table, run_timed, verdict

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "own_scripts" / "scripts" / "hf_trainer.py"


def runs_created(db: Path) -> tuple[int, int, int]:
    """(runs, experiments with runs, runs left RUNNING) in an MLflow SQLite store."""
    if not db.exists():
        return 0, 0, 0
    with sqlite3.connect(db) as conn:
        runs, experiments = conn.execute("SELECT COUNT(*), COUNT(DISTINCT experiment_id) FROM runs").fetchone()
        running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    return runs, experiments, running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    print_header("own script: a Hugging Face Trainer script, bare torchrun vs nbexec train --entrypoint",
                 [f"repeats: {args.repeats} each, nproc {args.nproc}, alternating order, tracking on"])
    env = bench_env(os.environ)
    commands = {
        "bare torchrun": lambda out: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc-per-node", str(args.nproc), str(SCRIPT), out],
        "nbexec train": lambda out: [sys.executable, "-m", "nbexec.cli", "train", "--entrypoint", str(SCRIPT),
                                     "--nproc", str(args.nproc), "--quiet", "--", out],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    counts: dict[str, list[tuple[int, int, int]]] = {name: [] for name in commands}
    for i in range(args.repeats):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        for name in order:
            with tempfile.TemporaryDirectory(prefix="nbexec-bench-own-") as tmp:
                times[name].append(run_timed(commands[name](str(Path(tmp) / "hf_out")), cwd=tmp, env=env, timeout=900))
                counts[name].append(runs_created(Path(tmp) / "mlflow.db"))
        print(f"  run {i + 1}: " + "  ".join(f"{n} {times[n][-1]:.2f} s, runs {counts[n][-1][0]}" for n in commands))
    print()
    rows = []
    for name in commands:
        runs, experiments, running = zip(*counts[name])
        rows.append([name, f"{median(times[name]):.2f}", f"{min(times[name]):.2f}", max(runs), max(experiments),
                     max(running)])
    print_table(["command", "median s", "min s", "runs/job", "experiments", "left RUNNING"], rows)
    print(noise_note(times))
    ratio = median(times["nbexec train"]) / median(times["bare torchrun"])
    one_run = all(c == (1, 1, 0) for c in counts["nbexec train"])
    print(f"RATIO nbexec train/bare torchrun (HF Trainer script, wall, informational): median {ratio:.3f}")
    print(f"RUNS nbexec train: one MLflow run per job, none RUNNING: {verdict(one_run)}")
    return 0 if one_run else 1


if __name__ == "__main__":
    raise SystemExit(main())
