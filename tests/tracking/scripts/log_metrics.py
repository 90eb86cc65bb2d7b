"""A training script that logs metrics the nbexec way: ``ctx.log_metrics`` writes the event
(for the notebook) and, on rank 0 when the parent handed the MLflow run over, sends the
values to MLflow from a background thread.

    log_metrics.py STEPS [FAIL_RANK]
"""
import sys

from nbexec.child import create_run_context

steps = int(sys.argv[1])
fail_rank = int(sys.argv[2]) if len(sys.argv) > 2 else -1
ctx = create_run_context()
if ctx.is_main:
    print(f"mlflow child logging {'on' if ctx._mlflow is not None else 'off'}")
for step in range(steps):
    ctx.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
    if ctx.rank == fail_rank and step == steps // 2:
        raise RuntimeError("boom on purpose")
ctx.close()
print(f"rank {ctx.rank} done after {steps} steps")
