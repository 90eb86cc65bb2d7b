"""A hang, on purpose: rank 1 sleeps before an all_reduce, and rank 0 waits for it there.

Until the ranks are in place each prints a line a second (so stall detection counts
from when they went silent). The process group comes from nbexec's child API.
"""
import threading
import time

in_place = threading.Event()


def heartbeat() -> None:
    while not in_place.wait(1.0):
        print("starting", flush=True)


threading.Thread(target=heartbeat, daemon=True).start()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from nbexec.child import create_run_context, init_process_group_if_needed  # noqa: E402

ctx = create_run_context()
init_process_group_if_needed(ctx)
total = torch.ones(1)
in_place.set()
if ctx.rank == 1:
    print("rank 1: loading the next batch", flush=True)
    time.sleep(3600)  # stuck: a data loader that never returns
print(f"rank {ctx.rank}: all_reduce", flush=True)
dist.all_reduce(total)
