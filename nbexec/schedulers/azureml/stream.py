"""Stream an AzureML job's logs into a run dir's log files (a child of the submitting process):

    python -m nbexec.schedulers.azureml.stream --job NAME --log-dir DIR  < launch.azureml options (a JSON line)

It runs ``MLClient.jobs.stream(NAME)``, which prints to a hard-coded
``sys.stdout`` until the job is over; in this process (never the kernel's)
``sys.stdout`` is a :class:`SectionRouter` that splits what the SDK prints
into the run dir's log files, which the submitter tails
(:class:`~nbexec.schedulers.filetail.FileTailPump`) into ``lines()`` and the
sinks. The client comes from :func:`~nbexec.schedulers.azureml.client.connect`:
the same workspace options and credential chain as the submission (``az
login``, service principal variables, managed identity); no secret is on the
command line or stdin. The submitter keeps stdin open: when it closes
(the submitter stopped it, or died), this process exits.

Test hook (only for tests; Azure cannot be reached from CI): when
``NBEXEC_AZUREML_TEST_CLIENT=module:factory`` is set, ``factory(options)``
builds the client instead of ``connect``. Setting a variable of this process
already allows running code (``PYTHONPATH``, ``PYTHONSTARTUP``), so the hook
grants nothing new; nbexec never sets it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import IO

import nbexec.contract as contract
from nbexec.schedulers.azureml.client import make_client

# The SDK polls the job's log files at most this far apart (its default backs off to 60 s).
POLL_MAX_S = 10
_HEADER_RE = re.compile(r"^Streaming (\S+)$")
# AzureML's per-process logs: user_logs/std_log_process_<rank>.txt (std_log.txt: one process)
_RANK_FILE_RE = re.compile(r"(?:^|/)std_log(?:_process_(\d+))?\.txt$")


def rank_of(log_name: str) -> int | None:
    """The global rank whose output an AzureML log file holds (None: not a rank's)."""
    match = _RANK_FILE_RE.search(log_name)
    if not match:
        return None
    return int(match.group(1) or 0)


class SectionRouter(io.TextIOBase):
    """This process's ``sys.stdout``: what ``jobs.stream`` prints, split into log files.

    The SDK opens each log file's output with ``Streaming <name>`` and a rule;
    the lines after it go to ``rank<N>.log`` when the file is a rank's, the
    rest (run id, studio link, execution summary, errors) to ``launcher.log``.
    Later chunks of a file come without a header: they stay in the current
    section (the SDK streams one file per job: rank 0's). A rank file that
    exists already (a restarted streamer) has its lines skipped: the SDK
    prints each file from its start.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[int | None, IO[bytes]] = {}
        self._rank: int | None = None
        self._after_header = False
        self._blanks = 0  # blank lines not yet written
        self._pending = ""
        self._skip: dict[int, int] = {}
        for path in log_dir.glob(contract.RANK_LOG_GLOB):
            rank = contract.rank_of_log_name(path.name)
            if rank is not None:
                with open(path, "rb") as fh:
                    self._skip[rank] = sum(1 for _ in fh)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._route(line)
        self.flush()
        return len(text)

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()

    def launcher(self, text: str) -> None:
        """Write lines of nbexec's own to ``launcher.log``."""
        for line in text.splitlines():
            self._out(None, line)
        self.flush()

    def close(self) -> None:
        if self._pending:
            self._route(self._pending)
            self._pending = ""
        self._blanks_to(self._rank)
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        super().close()

    def _route(self, line: str) -> None:
        header = _HEADER_RE.match(line)
        if header:
            self._blanks_to(None)
            self._out(None, line)
            self._rank = rank_of(header.group(1))
            self._after_header = True
            return
        if self._after_header and line and set(line) == {"="}:
            return  # the header's rule
        if not line.strip():  # blank lines go where the next line goes (the SDK spaces its sections)
            self._blanks += 1
            return
        if self._after_header:
            self._blanks = max(0, self._blanks - 1)  # the blank line under the rule
            self._after_header = False
        if line == "Execution Summary":
            self._rank = None
        self._blanks_to(self._rank)
        self._out(self._rank, line)

    def _blanks_to(self, rank: int | None) -> None:
        for _ in range(self._blanks):
            self._out(rank, "")
        self._blanks = 0

    def _out(self, rank: int | None, line: str) -> None:
        if rank is not None and self._skip.get(rank):
            self._skip[rank] -= 1
            return
        fh = self._files.get(rank)
        if fh is None:
            path = self.log_dir / contract.LAUNCHER_LOG if rank is None else self.log_dir / contract.rank_log_name(rank)
            fh = self._files[rank] = open(path, "ab")  # noqa: SIM115 - closed in close()
        fh.write(line.encode("utf-8", errors="replace") + b"\n")


def _exit_at_eof() -> None:
    """The submitter holds stdin open: EOF means it stopped streaming or died; so does this process."""
    for _ in sys.stdin:
        pass
    os._exit(0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbexec.schedulers.azureml.stream")
    parser.add_argument("--job", required=True)
    parser.add_argument("--log-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    options = json.loads(sys.stdin.readline() or "{}")
    threading.Thread(target=_exit_at_eof, name="nbexec-stream-watch", daemon=True).start()
    # read by azure.ai.ml when it is imported: set before make_client imports it
    os.environ.setdefault("AZUREML_RUN_POLLING_INTERVAL_MAX", str(POLL_MAX_S))
    router = SectionRouter(args.log_dir)
    sys.stdout = router  # the SDK writes to sys.stdout; this is the child's, not the kernel's
    try:
        make_client(options).jobs.stream(args.job)
    except Exception as err:  # noqa: BLE001 - a failed job raises JobException with AzureML's error
        failed_job = type(err).__name__ == "JobException"
        router.launcher(f"AzureML: {err}" if failed_job else f"nbexec: log streaming stopped: {err!r}")
        return 0 if failed_job else 1
    finally:
        sys.stdout = sys.__stdout__
        router.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
