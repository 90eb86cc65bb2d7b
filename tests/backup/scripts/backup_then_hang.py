"""Back SRC up to TARGET, but stop mid-copy: once HANG_AFTER bytes are written, write READY and sleep.

    backup_then_hang.py SRC TARGET READY HANG_AFTER

The test SIGKILLs this process while it sleeps inside a file's copy. Only the
writes are slowed down; everything else is nbexec's own code.
"""

import sys
import time
from pathlib import Path

from nbexec.backup import copy as backup_copy
from nbexec.backup import immediate_backup_if_needed

src, target, ready, hang_after = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
real_write = backup_copy.Copier._write_chunk
written = 0


def write_then_hang(self, src_fd, fd, data, offset):
    global written
    real_write(self, src_fd, fd, data, offset)
    written += len(data)
    if written >= hang_after:
        ready.write_text(str(written))
        time.sleep(3600)


backup_copy.Copier._write_chunk = write_then_hang
immediate_backup_if_needed(src, backup_enabled=True, target=target, project="p", run_name="r")
print("finished without being killed", flush=True)
