"""The pump hands the sinks an event the trainer wrote before a line ahead of that line (the bar never lags the log)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import nbexec.contract as contract
from nbexec.events import EventWriter
from nbexec.runner.streams import LogPump

from .conftest import wait_until


class Recorder:
    """Stands in for the Dispatcher: keeps what the pump hands on, in order."""

    wants_lines = True

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def put_lines(self, lines: list[Any]) -> None:
        with self.lock:
            self.items += [("line", ln.text) for ln in lines]

    def put_partial(self, lines: list[Any]) -> None:
        pass

    def put_events(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.items += [("event", ev) for ev in events]

    def index(self, predicate: Any) -> int | None:
        with self.lock:
            return next((i for i, item in enumerate(self.items) if predicate(item)), None)


def test_events_written_before_a_line_reach_the_sinks_before_it(tmp_path: Path) -> None:
    recorder = Recorder()
    recorded: list[dict[str, Any]] = []
    pump = LogPump(tmp_path, recorder, on_events=recorded.extend)  # type: ignore[arg-type]
    done = threading.Event()
    thread = threading.Thread(target=pump.run, args=(done.is_set,), daemon=True)
    thread.start()
    writer = EventWriter(tmp_path / contract.EVENTS_FILE, rank=0)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(pump.socket_path)
        conn.sendall(json.dumps({"rank": 0, "stream": "stdout", "pid": os.getpid()}).encode() + b"\n")
        for step in range(1, 21):  # as the trainer does: report the step, then print it
            writer.emit("progress", step=step, total=20)
            conn.sendall(f"step {step}/20\n".encode())
            # one step at a time, as in training (the pump's periodic read of events.jsonl
            # would otherwise often catch a burst of events before their lines)
            wait_until(lambda s=step: recorder.index(lambda it: it == ("line", f"step {s}/20")) is not None,
                       30, f"the line of step {step}")
    finally:
        conn.close()
        writer.close()
        done.set()
        thread.join(30)

    for step in range(1, 21):
        event = recorder.index(lambda it, s=step: it[0] == "event" and it[1].get("step") == s)
        line = recorder.index(lambda it, s=step: it == ("line", f"step {s}/20"))
        assert event is not None and line is not None and event < line, (step, recorder.items)
    assert pump.rank_pids == {0: os.getpid()}, "the rank's pid, for the resource sampler"
    assert recorder.index(lambda it: it[0] == "event" and it[1]["kind"] == "phase" and it[1]["phase"] == "starting") \
        is not None, "the first rank to connect is a phase of the start"
    assert [e["step"] for e in recorded if e["kind"] == "progress"] == list(range(1, 21))
