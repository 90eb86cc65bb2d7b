"""What running a job through the slurm scheduler costs vs a local launch (informational).

    sudo python bench/slurm_overhead.py [--repeats 5]

Starts the tests' one-node Slurm cluster (tests/slurm/cluster.py: munged,
slurmctld, slurmd in a temp dir; needs root and Debian's slurm-wlm + munge),
then alternates the same 2-rank no-op job launched through ``nbexec.launch``
with ``launch.scheduler: local`` and ``slurm`` (tracking off: the job alone),
timing launch -> result. Also shows how long the cluster took to come up and
the split of a Slurm job's time: sbatch returning, the job starting (Slurm's
scheduler pass), and the run until ``squeue`` no longer lists it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "slurm"))

from _common import median, noise_note, print_header, print_table  # noqa: E402 - path set above
from cluster import missing_requirements, start_cluster  # noqa: E402

NOOP = "import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    from nbexec.executor import launch

    work = Path(tempfile.mkdtemp(prefix="nbexec-bench-slurm-"))
    work.chmod(0o755)  # munged (user munge) must reach its socket dir below
    (work / "noop.py").write_text(NOOP)
    started = time.perf_counter()
    cluster = start_cluster(work / "cluster")
    up_s = time.perf_counter() - started
    os.environ["SLURM_CONF"] = str(cluster.conf)
    print_header("slurm scheduler vs local launch (2-rank no-op, tracking off)",
                 [f"cluster up (munged + slurmctld + slurmd, node idle): {up_s:.2f} s"])
    samples: dict[str, list[float]] = {"local": [], "slurm": []}
    queued: list[float] = []
    try:
        for i in range(args.repeats):
            for scheduler in ("local", "slurm") if i % 2 == 0 else ("slurm", "local"):
                config = {"launch": {"entrypoint": str(work / "noop.py"), "nproc": 2, "scheduler": scheduler},
                          "output": {"dir": str(work / "runs")}, "tracking": {"enabled": False}}
                t0 = time.perf_counter()
                run = launch(config)
                if scheduler == "slurm":
                    submitted = time.perf_counter()
                    while run.slurm_state == "PENDING":
                        time.sleep(0.01)
                    queued.append(time.perf_counter() - submitted)
                run.result(timeout=300)
                samples[scheduler].append(time.perf_counter() - t0)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    local, slurm = median(samples["local"]), median(samples["slurm"])
    print_table(["launch -> result", "median s", "min s", "max s"], [
        [name, f"{median(v):.2f}", f"{min(v):.2f}", f"{max(v):.2f}"] for name, v in samples.items()
    ])
    print(f"slurm / local: {slurm / local:.2f}x; slurm job pending after sbatch (median): {median(queued):.2f} s")
    print(noise_note(samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
