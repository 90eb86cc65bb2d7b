"""Rank 0 saves a 'checkpoint' bigger than the disk left under the run dir (it fails with ENOSPC)."""

import os
from pathlib import Path

if os.environ["RANK"] == "0":
    target = Path(os.environ["NBEXEC_CHECKPOINT_DIR"])
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "model.pt", "wb") as fh:
        for _ in range(64):
            fh.write(b"\0" * (1 << 16))
print("saved")
