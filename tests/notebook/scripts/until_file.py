"""Prints a numbered tick line every 50 ms until the file argv[1] exists, then exits 0.

The test decides when the job ends (by creating the file), so "still running"
is a fact the test controls, not a race against a timer.
"""
import os
import sys
import time
from pathlib import Path

stop, rank = Path(sys.argv[1]), int(os.environ["RANK"])
i = 0
while not stop.exists():
    print(f"tick {i} from rank {rank}", flush=True)
    i += 1
    time.sleep(0.05)
print(f"rank {rank} saw {stop.name}: done", flush=True)
