"""A faulthandler dump as data: threads, frames, and where a rank is.

    Thread 0x00007f... (most recent call first):
      File "/.../torch/distributed/distributed_c10d.py", line 3252 in all_reduce
      File "/.../train.py", line 10 in <module>

Frames are kept most recent first, as faulthandler and py-spy write them.
"""

from __future__ import annotations

import linecache
import os
import re
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# torch.distributed's collectives (and point-to-point calls): a rank whose main thread
# is inside one of these is waiting for its peers.
COLLECTIVES = frozenset({
    "all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_into_tensor", "all_gather_coalesced",
    "_all_gather_base", "all_gather_object", "reduce", "reduce_scatter", "reduce_scatter_tensor",
    "_reduce_scatter_base", "broadcast", "broadcast_object_list", "barrier", "monitored_barrier",
    "all_to_all", "all_to_all_single", "gather", "gather_object", "scatter", "scatter_object_list",
    "send", "recv", "send_object_list", "recv_object_list", "batch_isend_irecv",
})
# A rank's exception that says a collective ran out of time (gloo, NCCL's watchdog, c10d's own wording).
COLLECTIVE_TIMEOUT_RE = re.compile(
    r"Timed out waiting \d+ ?ms for (recv|send) operation|Watchdog caught collective operation timeout"
    r"|collective operation timeout|monitoredBarrier .*timed out|ran for \d+ milliseconds before timing out",
    re.I,
)

_HEADER_RE = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+) \(most recent call first\):$")
_FRAME_RE = re.compile(r'^  File "(.*)", line (\d+|\?+) in (.*)$')
_PACKAGE_DIRS = ("site-packages", "dist-packages")
_OURS = (str(Path(__file__).resolve().parents[1]) + os.sep,)  # nbexec's own code (the bootstrap)


@dataclass(frozen=True)
class Frame:
    """One Python frame: file, line and function (no variable values)."""

    file: str
    line: int
    function: str

    @property
    def short_file(self) -> str:
        """The file as a person reads it: inside a library from the package down, else relative to here."""
        return short_path(self.file)

    @property
    def location(self) -> str:
        return f"{self.short_file}:{self.line}"

    @property
    def source(self) -> str:
        """The line of code, when the file is readable here ("" otherwise)."""
        if self.file.startswith("<"):
            return ""
        return linecache.getline(self.file, self.line).strip()

    @property
    def is_library(self) -> bool:
        """Python's own modules, installed packages, or nbexec: not the user's code."""
        return self.file.startswith("<") or _in_library(self.file)


@dataclass(frozen=True)
class ThreadStack:
    """One thread's stack, most recent call first.

    Attributes:
        ident: the thread id as faulthandler writes it (``0x00007f...``).
        main: the process's main thread (where a training loop runs).
        current: the thread that wrote the dump (the signal handler ran on it).
        truncated: faulthandler cut it (over 100 frames).
    """

    ident: str
    frames: tuple[Frame, ...]
    main: bool = False
    current: bool = False
    truncated: bool = False

    @property
    def collective(self) -> str | None:
        """The torch.distributed collective this thread is inside (the outermost one), or None."""
        found = None
        for frame in self.frames:
            if frame.function in COLLECTIVES and f"{os.sep}distributed{os.sep}" in frame.file:
                found = frame.function
        return found

    @property
    def user_frame(self) -> Frame | None:
        """The innermost frame in the user's own code (not Python's, a library's or nbexec's)."""
        return next((f for f in self.frames if not f.is_library), None)

    @property
    def title(self) -> str:
        """``main thread`` or ``thread 0x00007f...``."""
        return "main thread" if self.main else f"thread {self.ident}"

    @property
    def is_nbexec(self) -> bool:
        """One of nbexec's own threads in the rank (the stdout flusher), not the script's."""
        return not self.main and any(f.file.startswith(_OURS) for f in self.frames)

    @property
    def shown_frames(self) -> tuple[Frame, ...]:
        """The frames without nbexec's bootstrap and runpy below the script (as tracebacks show them)."""
        frames = list(self.frames)
        while frames and (frames[-1].file.startswith("<frozen runpy>") or frames[-1].file.startswith(_OURS)
                          or Path(frames[-1].file).name == "runpy.py"):
            frames.pop()
        return tuple(frames) or self.frames


    def format(self, title: str) -> str:
        """The stack as Python prints a traceback (most recent call last), for a root cause."""
        lines = [f"{title} (most recent call last):"]
        for frame in reversed(self.shown_frames):
            lines.append(f'  File "{frame.file}", line {frame.line}, in {frame.function}')
            if frame.source:
                lines.append(f"    {frame.source}")
        return "\n".join(lines) + "\n"


_TRACEBACK_FRAME_RE = re.compile(r'^\s*File "(.*)", line \d+, in (\S+)\s*$', re.M)


def collective_in_traceback(text: str) -> str | None:
    """The torch.distributed collective a Python traceback went through (the outermost one), or None."""
    for file, function in _TRACEBACK_FRAME_RE.findall(text):
        if function in COLLECTIVES and f"{os.sep}distributed{os.sep}" in file:
            return str(function)
    return None


def parse_dump(text: str, main_thread: str = "") -> tuple[ThreadStack, ...]:
    """The threads of a faulthandler dump (``all_threads=True``), in the order written (main last)."""
    threads: list[ThreadStack] = []
    ident, current, truncated = "", False, False
    frames: list[Frame] = []

    def close() -> None:
        if ident:
            threads.append(ThreadStack(ident, tuple(frames), main=ident == main_thread, current=current,
                                       truncated=truncated))

    for line in text.splitlines():
        header = _HEADER_RE.match(line)
        if header:
            close()
            ident, current, frames, truncated = header.group(2), header.group(1) == "Current thread", [], False
            continue
        frame = _FRAME_RE.match(line)
        if frame and ident:
            number = int(frame.group(2)) if frame.group(2).isdigit() else 0
            frames.append(Frame(frame.group(1), number, frame.group(3)))
        elif line.strip() == "..." and ident:
            truncated = True
    close()
    if threads and not any(t.main for t in threads) and not main_thread:
        last = threads[-1]  # faulthandler writes the oldest thread, the main one, last
        threads[-1] = ThreadStack(last.ident, last.frames, True, last.current, last.truncated)
    return tuple(threads)


def short_path(name: str) -> str:
    """``.../site-packages/torch/distributed/x.py`` -> ``torch/distributed/x.py``; files here relative."""
    if name.startswith("<"):
        return name
    for marker in _PACKAGE_DIRS:
        at = name.rfind(os.sep + marker + os.sep)
        if at >= 0:
            return name[at + len(marker) + 2 :]
    for root in _stdlib_roots():
        if name.startswith(root):
            return name[len(root) :]
    try:
        rel = os.path.relpath(name)
    except ValueError:
        return name
    return name if rel.startswith("..") else rel


def _in_library(name: str) -> bool:
    return name.startswith(_library_roots()) or any(f"{os.sep}{d}{os.sep}" in name for d in _PACKAGE_DIRS)


@cache
def _library_roots() -> tuple[str, ...]:
    roots = {str(Path(p).resolve()) + os.sep for p in _stdlib_paths()}
    roots |= set(_stdlib_roots())
    return (*roots, *_OURS)


@cache
def _stdlib_roots() -> tuple[str, ...]:
    return tuple(p + os.sep for p in _stdlib_paths())


@cache
def _stdlib_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({paths[k] for k in ("stdlib", "purelib", "platlib") if k in paths})
