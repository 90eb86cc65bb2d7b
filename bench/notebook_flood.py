"""Kernel memory and display update rate while a notebook shows a 1,000,000-line flood.

    python bench/notebook_flood.py [--lines 1000000] [--nproc 2] [--no-tracking]

A real kernel (jupyter_client) first runs a small warm-up job (so the imports a
first ``%train`` makes, MLflow's included, are not counted), then
``%train --entrypoint flood.py -- N`` where each of the ``--nproc`` ranks prints
``lines / nproc`` lines as fast as it can. This process samples the kernel's RSS
(psutil, every 20 ms) and counts the view's renderings on iopub while it runs.

Reported: RSS before the flood, peak during it, after it; renderings (display
outputs and the live widget's updates) and renderings per second over the job;
the size of the largest one; that the log files hold every line. Target: peak
RSS growth <= 50 MB, and renderings bounded (the widget's tail at most 20 a second).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _common import FLOOD
from notebook_kernel import BenchKernel

TARGET_MB = 50.0
NOOP = "import os\nprint('rank', os.environ['RANK'], 'ready', flush=True)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in all (split over the ranks)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow run (default: tracked, as users run)")
    args = parser.parse_args(argv)
    per_rank = args.lines // args.nproc
    tracking = " --no-tracking" if args.no_tracking else ""

    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        (Path(tmp) / "flood.py").write_text(FLOOD)
        (Path(tmp) / "noop.py").write_text(NOOP)
        kernel = BenchKernel(tmp)
        try:
            kernel.run("%load_ext nbexec")
            warm = kernel.run(f"w = %train --entrypoint noop.py --nproc {args.nproc}{tracking} --output runs")
            if warm["status"] != "ok":
                print(f"warm-up failed: {warm.get('ename')}: {warm.get('evalue')}", file=sys.stderr)
                return 1
            proc = psutil.Process(kernel.pid)
            before = proc.memory_info().rss
            peak = [before]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.02):
                    try:
                        peak[0] = max(peak[0], proc.memory_info().rss)
                    except psutil.Error:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            renders: list[tuple[float, int]] = []

            def on_message(msg: dict[str, Any], received: float) -> None:
                if msg["msg_type"] in ("display_data", "update_display_data"):
                    data = msg["content"]["data"]
                    renders.append((received, len(data.get("text/html", "")) + len(data.get("text/plain", ""))))
                elif msg["msg_type"] in ("comm_open", "comm_msg"):  # the live widget's updates (head, tail)
                    renders.append((received, len(json.dumps(msg["content"].get("data") or {}))))

            sampler.start()
            start = time.time()
            reply = kernel.run(
                f"r = %train --entrypoint flood.py --nproc {args.nproc}{tracking} --output runs -- {per_rank}",
                on_message=on_message,
            )
            wall = time.time() - start
            stop.set()
            sampler.join()
            after = proc.memory_info().rss
            if reply["status"] != "ok":
                print(f"the flood cell failed: {reply.get('ename')}: {reply.get('evalue')}", file=sys.stderr)
                return 1
            info = kernel_output(kernel)
        finally:
            kernel.close()
        run_dir = Path(info["dir"])
        counts = [sum(1 for _ in open(run_dir / "logs" / f"rank{r}.log", "rb")) for r in range(args.nproc)]

    mb = 1024 * 1024
    growth = (peak[0] - before) / mb
    job = info["duration"]
    print(f"flood: {args.nproc} ranks x {per_rank:,} lines; job {job:.1f} s, cell {wall:.1f} s; "
          f"tracking {'off' if args.no_tracking else 'on'}")
    print(f"log files: {counts} lines (expected {per_rank:,} each): {'complete' if all(c == per_rank for c in counts) else 'INCOMPLETE'}")
    print(f"kernel RSS: before {before / mb:.1f} MB, peak {peak[0] / mb:.1f} MB (+{growth:.1f}), after {after / mb:.1f} MB")
    print(f"view renderings: {len(renders)} in {wall:.1f} s ({len(renders) / wall:.2f}/s), "
          f"largest {max(size for _, size in renders) / 1024:.1f} KiB")
    met = growth <= TARGET_MB
    print(f"RESULT peak RSS growth {growth:.1f} MB (target <= {TARGET_MB:.0f} MB): {'met' if met else 'NOT met'}")
    return 0


def kernel_output(kernel: BenchKernel) -> dict[str, Any]:
    """The flood run's directory and duration, asked of the kernel in a cell of its own."""
    out: list[str] = []

    def on_message(msg: dict[str, Any], received: float) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    kernel.run("import json; print(json.dumps({'dir': str(r.run_dir), 'duration': r.duration_s}))", on_message=on_message)
    return json.loads("".join(out).strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
