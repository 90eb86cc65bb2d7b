"""A stall on the job's MLflow run: tags saying so and the stacks as an artifact, when it happens.

The run handle (``nbexec.runner``, which never imports tracking) tells its sinks
about a stall with a ``stall`` event; this sink puts it on the run at once,
so a job that then hangs for hours, or is killed, shows why in MLflow:

- tags ``nbexec.stall`` (``true``), ``nbexec.stall.message``, ``nbexec.stall.ranks``;
- ``logs/stacks-<time>.txt`` as an artifact (secret values scrubbed, like every artifact).

MLflow is called from a thread of its own: the sinks' thread never waits for the store.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbexec.contract as contract
from nbexec.events import Event
from nbexec.runner.sinks import Sink
from nbexec.tracking.batching import MAX_TAG_VALUE, truncate

if TYPE_CHECKING:
    from nbexec.redact import Scrubber

TAG_STALL = "nbexec.stall"
TAG_STALL_MESSAGE = "nbexec.stall.message"
TAG_STALL_RANKS = "nbexec.stall.ranks"
END_WAIT_S = 30.0  # at the job's end, how long the stall's tags and stacks may still take to reach MLflow


class StallSink(Sink):
    """Tags the job's MLflow run and logs the stacks when the run handle reports a stall.

    Args:
        run: returns the open run as ``(run_id, tracking_uri)``, or None (not open: nothing is sent).
        scrubber: the job's secret values, kept out of the artifact.
    """

    wants_lines = False

    def __init__(self, run: Callable[[], tuple[str, str] | None], scrubber: Scrubber | None = None) -> None:
        self._run = run
        self._scrubber = scrubber
        self.threads: list[threading.Thread] = []

    def on_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.get("kind") == "stall":
                thread = threading.Thread(target=self._record, args=(ev,), name="nbexec-mlflow-stall", daemon=True)
                thread.start()
                self.threads.append(thread)

    def on_end(self, result: object) -> None:
        """Let what is being sent finish (bounded), so a caller that waited for the job sees it in MLflow."""
        for thread in self.threads:
            thread.join(END_WAIT_S)

    def _record(self, event: Event) -> None:
        try:
            found = self._run()
            if found is None:
                return
            run_id, uri = found
            record_stall(run_id, uri, event, self._scrubber)
        except Exception:  # noqa: BLE001 - tracking never touches the job; the stacks are in the run dir
            pass


def record_stall(run_id: str, tracking_uri: str, event: Event, scrubber: Scrubber | None = None) -> None:
    """Tag ``run_id`` with the stall and log its stacks file under ``logs/``."""
    from nbexec.tracking.store import get_client

    client = get_client(tracking_uri)
    message = str(event.get("message") or "")
    if scrubber is not None:
        message = scrubber.text(message)
    client.set_tag(run_id, TAG_STALL, "true")
    client.set_tag(run_id, TAG_STALL_MESSAGE, truncate(message, MAX_TAG_VALUE))
    ranks: Any = event.get("ranks") or []
    client.set_tag(run_id, TAG_STALL_RANKS, ",".join(str(r) for r in ranks))
    stacks = event.get("stacks")
    if stacks and Path(stacks).is_file():
        with tempfile.TemporaryDirectory(prefix="nbexec-stall-") as tmp:
            staged = Path(tmp) / Path(stacks).name
            if scrubber is not None:
                scrubber.copy_file(Path(stacks), staged)
            else:
                staged.write_bytes(Path(stacks).read_bytes())
            client.log_artifact(run_id, str(staged), artifact_path=contract.LOG_DIR)
