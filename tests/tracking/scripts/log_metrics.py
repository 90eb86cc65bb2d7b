"""A training script that logs metrics the nbexec way: events for the notebook, MLflow from rank 0.

    log_metrics.py STEPS [FAIL_RANK]

This is what ``nbexec.child`` will do once the MetricsLogger is wired into
``RunContext.log_metrics``; here the script calls both itself.
"""
import sys

from nbexec.child import create_run_context
from nbexec.tracking.child_logger import MetricsLogger

steps = int(sys.argv[1])
fail_rank = int(sys.argv[2]) if len(sys.argv) > 2 else -1
ctx = create_run_context()
logger = MetricsLogger.from_env() if ctx.is_main else None
if ctx.is_main:
    print(f"mlflow child logging {'on' if logger is not None else 'off'}")
for step in range(steps):
    metrics = {"loss": 1.0 / (step + 1), "acc": step / steps}
    ctx.log_metrics(metrics, step=step)
    if logger is not None:
        logger.log(metrics, step=step)
    if ctx.rank == fail_rank and step == steps // 2:
        raise RuntimeError("boom on purpose")
if logger is not None:
    logger.close()
print(f"rank {ctx.rank} done after {steps} steps")
