"""What metric logging costs a training loop: 1,000 steps x 10 metrics.

    python bench/tracking_cost.py [--steps 1000] [--work 200] [--naive-values 300]

Variants, each in a fresh process (so imports and threads are counted), on
one real SQLite MLflow store in a temp dir:

- none:    the loop alone (a small torch matmul per step stands in for work)
- events:  ``ctx.log_metrics`` as nbexec's default (``metrics_from: parent``):
           the rank only appends to events.jsonl; the parent sends to MLflow
- rank0:   ``ctx.log_metrics`` with ``metrics_from: rank0``: batched
           MetricsLogger thread in the rank, flushed at the end
- naive:   ``mlflow.log_metric`` per value (timed on ``--naive-values`` values
           and reported per value, since 10,000 would take over a minute)

Prints loop wall time per variant, ratios against "none" (target <= 1.05 for
the variant nbexec uses by default) and the speed-up over naive logging.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    mode, steps, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x = torch.randn(work, work)
    ctx = None
    if mode in ("events", "rank0"):
        from nbexec.child import create_run_context
        ctx = create_run_context()
    t0 = time.perf_counter()
    for step in range(steps):
        y = x @ x
        if ctx is not None:
            ctx.log_metrics({f"m{i}": float(i + step) for i in range(10)}, step=step)
    loop = time.perf_counter() - t0
    if ctx is not None:
        t1 = time.perf_counter(); ctx.close(); close = time.perf_counter() - t1
    else:
        close = 0.0
    print(json.dumps({"loop": loop, "close": close}))
    """
)

NAIVE = textwrap.dedent(
    """
    import json, sys, time
    import mlflow
    n = int(sys.argv[1])
    mlflow.set_tracking_uri(sys.argv[2])
    with mlflow.start_run(run_id=sys.argv[3]):
        t0 = time.perf_counter()
        for i in range(n):
            mlflow.log_metric(f"m{i % 10}", float(i), step=i // 10)
        print(json.dumps({"per_value": (time.perf_counter() - t0) / n}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--work", type=int, default=200, help="matmul size per step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-values", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        tmpdir = Path(tmp)
        uri = f"sqlite:///{tmpdir / 'mlflow.db'}"
        from nbexec.tracking import create_training_mlflow_run

        script = tmpdir / "loop.py"
        script.write_text(CHILD)
        results: dict[str, list[float]] = {"none": [], "events": [], "rank0": []}
        closes: dict[str, list[float]] = {k: [] for k in results}
        for r in range(args.repeats):
            for mode in results:
                env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NBEXEC_"))}
                env.update({"OMP_NUM_THREADS": "1", "NBEXEC_EVENTS": str(tmpdir / f"events-{mode}-{r}.jsonl")})
                if mode == "rank0":
                    tracked = create_training_mlflow_run({"tracking": {"uri": uri}}, run_name=f"rank0-{r}")
                    env.update(tracked.env())
                    env["NBEXEC_MLFLOW_CHILD_METRICS"] = "1"
                out = subprocess.run([sys.executable, str(script), mode, str(args.steps), str(args.work)],
                                     env=env, capture_output=True, text=True, check=True)
                data = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(data["loop"])
                closes[mode].append(data["close"])
        naive_run = create_training_mlflow_run({"tracking": {"uri": uri}}, run_name="naive")
        naive_script = tmpdir / "naive.py"
        naive_script.write_text(NAIVE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        out = subprocess.run([sys.executable, str(naive_script), str(args.naive_values), uri, naive_run.run_id],
                             env=env, capture_output=True, text=True, check=True)
        per_value = json.loads(out.stdout.strip().splitlines()[-1])["per_value"]

    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(f"{args.steps} steps x 10 metrics, matmul {args.work}x{args.work} per step, {args.repeats} repeats (median)")
    for mode in results:
        close = sorted(closes[mode])[len(closes[mode]) // 2]
        print(f"  {mode:7s} loop {med[mode]:.3f} s   ratio vs none {med[mode] / med['none']:.3f}   close {close:.3f} s")
    naive_total = per_value * args.steps * 10
    print(f"  naive   mlflow.log_metric: {per_value * 1000:.2f} ms per value -> ~{naive_total:.1f} s of logging "
          f"for the loop's {args.steps * 10} values")
    default = med["events"] / med["none"]
    print(f"RATIO events(default)/none: {default:.3f}  target <= 1.05: {'MET' if default <= 1.05 else 'NOT MET'}")
    print(f"RATIO rank0/none: {med['rank0'] / med['none']:.3f}  (informational)")
    extra = max(med["events"] - med["none"], 1e-6)
    print(f"SPEED-UP over naive per-value logging (logging time): ~{naive_total / extra:.0f}x for the default")


if __name__ == "__main__":
    main()
