"""Run every benchmark in this folder in sequence, each with its defaults.

    python bench/run_all.py

Takes about 4-6 minutes on a 2-core machine. Each benchmark prints its own
table and a final RATIO/RESULT line; a summary of those lines comes last.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["launch_overhead.py", "streaming.py", "import_time.py"]


def main() -> int:
    summary: list[str] = []
    failed = []
    for name in BENCHMARKS:
        print(f"\n######## {name} ########", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / name)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        out = proc.stdout.decode(errors="replace")
        print(out, end="", flush=True)
        print(f"({name}: exit {proc.returncode}, {time.perf_counter() - start:.0f} s)", flush=True)
        if proc.returncode != 0:
            failed.append(name)
        summary += [f"{name}: {line}" for line in out.splitlines() if line.startswith(("RATIO", "RESULT"))]
    print("\n######## summary ########")
    for line in summary:
        print(line)
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
