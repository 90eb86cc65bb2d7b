"""A plain loop with a tqdm bar on rank 0, as people write it.

    tqdm_until_file.py STOP [--total 10] [--hold-at 3]

The bar reaches --hold-at, then the script waits until the file STOP exists
(at most 60 s), finishes the bar and prints TQDM_DONE. A test creates STOP
only once it has seen the bar, so "the bar showed before the end" is a fact
the test observes, not a race against a timer.
"""

import argparse
import os
import time
from pathlib import Path

from tqdm import tqdm

parser = argparse.ArgumentParser()
parser.add_argument("stop")
parser.add_argument("--total", type=int, default=10)
parser.add_argument("--hold-at", type=int, default=3)
args = parser.parse_args()
stop = Path(args.stop)
deadline = time.monotonic() + 60
rank = int(os.environ.get("RANK", "0"))
with tqdm(total=args.total, desc="train", mininterval=0, disable=rank != 0) as bar:
    for step in range(1, args.total + 1):
        bar.update(1)
        if step == args.hold_at:
            while not stop.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
print(f"TQDM_DONE rank {rank} saw_stop={stop.exists()}")
