"""A training script with a bug that only shows on rank 1 (for the failure examples).

Any script runs unchanged under nbexec: it reads torchrun's RANK/WORLD_SIZE and prints.
"""
import os

rank = int(os.environ["RANK"])
print(f"rank {rank}: loading batch 17", flush=True)
if rank == 1:
    labels, num_labels = [0, 1, 7], 5
    raise ValueError(f"bad batch 17: label {max(labels)} out of range 0..{num_labels - 1}")
print(f"rank {rank}: done", flush=True)
