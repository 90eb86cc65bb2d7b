"""A real Jupyter kernel for the notebook benchmarks: run a cell, see its outputs as they arrive.

Imported by ``bench/notebook_latency.py`` and ``bench/notebook_flood.py`` (the
script's folder is first on ``sys.path``). Needs the ``dev`` extra (jupyter_client, ipykernel).
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from typing import Any

from jupyter_client.manager import KernelManager

OnMessage = Callable[[dict[str, Any], float], None]  # (iopub message, time.time() when received)


class BenchKernel:
    def __init__(self, cwd: str, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd, env=dict(env if env is not None else os.environ))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def run(self, code: str, *, on_message: OnMessage | None = None, timeout: float = 600.0) -> dict[str, Any]:
        """Execute ``code``; hand every iopub message of it to ``on_message``; return the reply content."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        reply: dict[str, Any] | None = None
        idle = False
        while not (idle and reply is not None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell did not finish in {timeout} s")
            if reply is None:
                try:
                    msg = self.kc.get_shell_msg(timeout=0)
                except queue.Empty:
                    pass
                else:
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg["content"]
            try:
                msg = self.kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                continue
            now = time.time()
            if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id:
                idle = msg["content"]["execution_state"] == "idle"
            elif on_message is not None:
                on_message(msg, now)
        return reply

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
