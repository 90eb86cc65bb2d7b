"""Writes stdout and stderr interleaved, from Python, without flushing, as scripts do.

Line i goes to stdout unless i % 3 == 1 (stderr); every 7th stdout line through
sys.stdout.buffer. The expected order is the order of i.
"""

import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
for i in range(n):
    if i % 3 == 1:
        sys.stderr.write(f"E{i}\n")
    elif i % 7 == 0:
        sys.stdout.buffer.write(f"O{i}\n".encode())
    else:
        print(f"O{i}")
print("O-last", end="")  # an unterminated last line comes out last too
