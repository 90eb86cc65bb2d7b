"""A fast stand-in trainer for sweep tests, run by torchrun like any training script.

Per epoch (``training.epochs``) rank 0 reports ``val_loss = (log10(lr) + 2)^2 + 1/epoch``
(lr = ``training.learning_rate``): best near 0.01, lower every epoch.

Controlled from the environment the sweep passes down:
- ``FAIL_TRIAL=N``: in trial N (``$HPO_TRIAL_NUMBER``) rank 1 raises before reporting.
- ``HOLD_TRIAL=N`` and ``RELEASE_FILE``: trial N reports one epoch, writes ``<RELEASE_FILE>.waiting``,
  then waits until ``RELEASE_FILE`` exists (the test kills the sweep meanwhile).
"""

import math
import os
import time
from pathlib import Path

from nbexec.child import create_run_context

ctx = create_run_context()
trial = os.environ.get("HPO_TRIAL_NUMBER")
lr = float(ctx.config["training"]["learning_rate"])
epochs = int(ctx.config["training"].get("epochs", 2))
if trial is not None and trial == os.environ.get("FAIL_TRIAL") and ctx.rank == 1:
    raise RuntimeError(f"trial {trial} fails on purpose (learning rate {lr})")
for epoch in range(1, epochs + 1):
    value = (math.log10(lr) + 2) ** 2 + 1.0 / epoch
    if ctx.is_main:
        ctx.log_metrics({"val_loss": value, "epoch": float(epoch)}, step=epoch)
        ctx.report_progress(epoch, epochs, epoch=epoch)
        print(f"epoch {epoch} val_loss {value:.4f}", flush=True)
    if epoch == 1 and trial is not None and trial == os.environ.get("HOLD_TRIAL"):
        release = Path(os.environ["RELEASE_FILE"])
        Path(f"{release}.waiting").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
