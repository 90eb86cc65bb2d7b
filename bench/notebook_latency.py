"""Line latency in a notebook: from a rank printing a line to the line reaching the kernel's output.

    python bench/notebook_latency.py [--seconds 10] [--rate 20] [--nproc 2]

A real kernel (jupyter_client) runs ``%train --entrypoint stamps.py`` in the
foreground; each rank prints ``stamp <i> <time.time()>`` ``--rate`` times a
second for ``--seconds``. For every rank-0 line, latency = the time this
process received the first view update (``display_data`` / ``update_display_data``
on iopub) that shows it, minus the time the rank printed it. The view is a
widget while the job runs: its lines travel as widget state (``comm_msg``,
numbered lines the browser appends), so a message counts when its ``lines``
hold the line; a whole display rendering counts too (front ends without the
widget, and the final summary). The kernel's own send time (the message
header's date) gives the latency to the kernel's output stream without the
transport; both are reported.

Target: p95 <= 100 ms (received). The tail is sent at most 20 times a second
(a line waits up to 50 ms for the next update when lines come faster than
that); the head (progress, metrics) at most 5 times a second.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from notebook_kernel import BenchKernel, percentile

TARGET_P95_S = 0.100
STAMPS = '''\
import os, sys, time
rank, seconds, rate = int(os.environ["RANK"]), float(sys.argv[1]), float(sys.argv[2])
end, i = time.time() + seconds, 0
while time.time() < end:
    print(f"stamp {i} {time.time():.6f}", flush=True)
    i += 1
    time.sleep(1.0 / rate)
'''
LINE = re.compile(r"^\[rank0\] stamp (\d+) (\d+\.\d+)$", re.M)
WIDGET_LINE = re.compile(r"^\[rank0\] stamp (\d+) (\d+\.\d+)$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rank prints")
    parser.add_argument("--rate", type=float, default=20.0, help="lines per second per rank")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nbexec-bench-") as tmp:
        script = Path(tmp) / "stamps.py"
        script.write_text(STAMPS)
        kernel = BenchKernel(tmp)
        try:
            kernel.run("%load_ext nbexec")
            first_seen: dict[int, tuple[float, float, float]] = {}  # i -> (printed, kernel sent, received)
            updates = [0]

            def on_message(msg: dict[str, Any], received: float) -> None:
                sent = msg["header"]["date"].timestamp()
                if msg["msg_type"] in ("comm_open", "comm_msg"):  # the live widget's state: its tail's lines
                    state = (msg["content"].get("data") or {}).get("state") or {}
                    if "lines" not in state:
                        return
                    updates[0] += 1
                    for _, text, _ in state["lines"]:
                        found = WIDGET_LINE.match(text)
                        if found:
                            first_seen.setdefault(int(found[1]), (float(found[2]), sent, received))
                    return
                if msg["msg_type"] not in ("display_data", "update_display_data"):
                    return
                updates[0] += 1
                for i, printed in LINE.findall(msg["content"]["data"].get("text/plain", "")):
                    first_seen.setdefault(int(i), (float(printed), sent, received))

            reply = kernel.run(
                f"r = %train --entrypoint {script} --nproc {args.nproc} --no-tracking --output {tmp}/runs "
                f"-- {args.seconds} {args.rate}",
                on_message=on_message,
            )
            if reply["status"] != "ok":
                print(f"the cell failed: {reply.get('ename')}: {reply.get('evalue')}", file=sys.stderr)
                return 1
        finally:
            kernel.close()

    expected = int(args.seconds * args.rate)
    to_kernel = [sent - printed for printed, sent, _ in first_seen.values()]
    to_client = [received - printed for printed, _, received in first_seen.values()]
    print(f"rank-0 lines seen in the view: {len(first_seen)} of ~{expected}; view updates: {updates[0]}")
    for name, values in (("to the kernel's output (sent)", to_kernel), ("to this client (received)", to_client)):
        print(
            f"latency {name}: p50 {percentile(values, 0.5) * 1000:.0f} ms, "
            f"p95 {percentile(values, 0.95) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
        )
    p95 = percentile(to_client, 0.95)
    met = p95 <= TARGET_P95_S
    print(f"RESULT p95 {p95 * 1000:.0f} ms (target <= {TARGET_P95_S * 1000:.0f} ms): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
