"""What a sweep adds to each training job: run_hpo trials vs the same jobs launched plainly.

    python bench/hpo_overhead.py [--rounds 4] [--nproc 2]

In one process and one temp dir with a real SQLite MLflow store: one warm-up
job (imports, store migration), then ``--rounds`` rounds, each one plain
tracked job of the reference trainer at its smallest
(``execute_training_subprocess``) and one sweep trial (``run_hpo`` asked for
one more trial of the same study: Optuna SQLite study opened again, nested
MLflow runs, intermediate values, key hashes, data fingerprint), in
alternating order to spread the noise of a shared machine. Prints the median
seconds per job for each and the ratio sweep / plain (target <= 1.15: the
sweep's bookkeeping costs a small fraction of a tiny job, less of a real one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CONFIG = {
    "model": {"backbone": "tiny-encoder", "d_model": 16, "layers": 1, "heads": 2, "ff_dim": 32},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 2, "seed": 3, "log_every": 4},
    "data": {"num_train": 128, "num_val": 32, "seq_len": 16, "path": "data"},
}
SPACE = {"training.learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbexec-bench-hpo-") as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["NBEXEC_CACHE_DIR"] = str(Path(tmp) / "cache")
        import optuna

        import nbexec

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        config = {**CONFIG, "launch": {"nproc": args.nproc}}
        nbexec.execute_training_subprocess(config, output_dir="warmup", stream=False)
        plain: list[float] = []
        sweep: list[float] = []

        def plain_job(i: int) -> None:
            t0 = time.perf_counter()
            nbexec.execute_training_subprocess(config, output_dir="plain", stream=False,
                                               overrides=[f"training.learning_rate={0.002 * (i + 1)}"])
            plain.append(time.perf_counter() - t0)

        def sweep_trial(i: int) -> None:
            t0 = time.perf_counter()
            result = nbexec.run_hpo(config, SPACE, i + 1, study_path="hpo/study.db", seed=0)
            assert result.ran == (i,), result.ran
            sweep.append(time.perf_counter() - t0)

        for i in range(args.rounds):
            for step in ((plain_job, sweep_trial) if i % 2 == 0 else (sweep_trial, plain_job)):
                step(i)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.nproc} processes per job")
        for name, times in (("plain job", plain), ("sweep trial", sweep)):
            print(f"{name:12s} median {statistics.median(times):6.2f} s, min {min(times):6.2f} s "
                  f"({len(times)} runs)")
        ratio = statistics.median(sweep) / statistics.median(plain)
        print(f"RATIO sweep/plain (median): {ratio:.3f}")
        print(f"RESULT {'met' if ratio <= 1.15 else 'NOT met'}: target <= 1.15")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
