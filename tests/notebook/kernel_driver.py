"""A real IPython kernel for tests: run a cell, get every iopub message it caused, in order.

Each message keeps ``sent``, when the kernel made it (its header's date, as a
``time.time()`` value), and the reply keeps ``reply_sent``: the kernel sends
outputs and the reply on different sockets, so only the kernel's own clock
tells what was published while the cell was still running.
"""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Cell:
    """One executed cell: the reply and its iopub messages, each with ``sent`` (the kernel's time.time())."""

    code: str
    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    reply_sent: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of_type("error")
        return errors[0]["content"] if errors else None

    @property
    def result_text(self) -> str | None:
        results = self.of_type("execute_result")
        return results[0]["content"]["data"].get("text/plain") if results else None

    def displays(self) -> list[dict[str, Any]]:
        """display_data and update_display_data messages, in order."""
        return self.of_type("display_data", "update_display_data")


class Kernel:
    """A kernel started with ``env`` in ``cwd``; ``run(code)`` executes one cell."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self._stray: list[dict[str, Any]] = []  # iopub messages of earlier cells that came late

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def run(self, code: str, timeout: float = 120.0, *, interrupt_after: Any = None, react: Any = None) -> Cell:
        """Execute ``code``; return once the kernel is idle again.

        Args:
            interrupt_after: a predicate on the messages so far; when it first holds,
                the kernel is interrupted (as the stop button does).
            react: called with the messages so far after each one (e.g. to let a
                waiting job go on once the test has seen what it waits for).
        """
        msg_id = self.kc.execute(code)
        cell = Cell(code=code, reply={})
        deadline = time.monotonic() + timeout
        idle = interrupted = False
        while not (idle and cell.reply):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish in {timeout} s: {code[:200]!r}")
            if not cell.reply:
                try:
                    reply = self.kc.get_shell_msg(timeout=0.05)
                except queue.Empty:
                    pass
                else:
                    if reply["parent_header"].get("msg_id") == msg_id:
                        cell.reply, cell.reply_sent = reply, _sent(reply)
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            msg["sent"] = _sent(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                self._stray.append(msg)
                continue
            if msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
                continue
            cell.messages.append(msg)
            if react is not None:
                react(cell.messages)
            if interrupt_after is not None and not interrupted and interrupt_after(cell.messages):
                interrupted = True
                self.km.interrupt_kernel()
        return cell

    def stray(self) -> list[dict[str, Any]]:
        """Messages that arrived attributed to another cell than the one running (drained)."""
        out, self._stray = self._stray, []
        return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _sent(msg: dict[str, Any]) -> float:
    date = msg["header"]["date"]
    return date.timestamp() if hasattr(date, "timestamp") else float("nan")


def kernel_env(tracking_uri: str) -> dict[str, str]:
    """The test process's environment, with MLflow pointed at the session store."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.pop("JPY_PARENT_PID", None)
    return env
