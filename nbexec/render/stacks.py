"""How a job's stacks read: the ranks side by side, as text (terminal) and HTML (notebook).

Each rank is a column: where its main thread is (one line), then its frames,
most recent call first, without nbexec's bootstrap below the script; other
threads follow. A terminal too narrow for the columns gets the ranks one after
the other instead. The saved file (``logs/stacks-<time>.txt``) holds every frame
(:meth:`nbexec.stacks.snapshot.StackSnapshot.to_text`).
"""

from __future__ import annotations

import shutil
import textwrap
import time
from typing import TYPE_CHECKING

from nbexec.render import markup
from nbexec.stacks.parse import short_path

if TYPE_CHECKING:
    from nbexec.stacks.parse import ThreadStack
    from nbexec.stacks.snapshot import RankStacks, StackSnapshot

MIN_COLUMN = 44  # narrower than this, ranks go one after the other
GUTTER = " │ "
MAX_FRAMES = 30  # per thread in a column; the saved file has them all


def stacks_text(snap: StackSnapshot, width: int | None = None) -> str:
    """The ranks side by side, under a heading and one summary line per rank."""
    width = width or shutil.get_terminal_size((160, 24)).columns
    lines = [_heading(snap), *(f"  {line}" for line in snap.summary_lines()), ""]
    columns = [rank_lines(r) for r in snap.ranks]
    n = len(columns)
    col = (width - len(GUTTER) * (n - 1)) // max(1, n)
    if n <= 1 or col < MIN_COLUMN:
        for block in columns:
            lines += [*block, ""]
        return "\n".join(lines).rstrip() + "\n"
    cut = [[_fit(line, col) for line in block] for block in columns]
    height = max(len(block) for block in cut)
    for i in range(height):
        row = [block[i] if i < len(block) else "" for block in cut]
        lines.append(GUTTER.join(cell.ljust(col) for cell in row).rstrip())
    return "\n".join(lines).rstrip() + "\n"


def stacks_html(snap: StackSnapshot) -> str:
    """The ranks as columns of a flex row (each scrolls on its own), under the summary."""
    head = f"<div><b>{markup.esc(_heading(snap))}</b></div>"
    summary = "".join(f'<div style="{markup.MONO}">{markup.esc(line)}</div>' for line in snap.summary_lines())
    cells = []
    for r in snap.ranks:
        body = "\n".join(rank_lines(r)[1:])
        cells.append(
            f'<div style="flex:1 1 0;min-width:280px;border-left:3px solid {_colour(r)};padding-left:6px">'
            f"<b>{markup.esc(rank_title(r))}</b>"
            f'<pre style="{markup.MONO};white-space:pre;overflow:auto;max-height:30em;margin:4px 0">'
            f"{markup.esc(body)}</pre></div>"
        )
    row = f'<div style="display:flex;gap:12px;align-items:flex-start;margin-top:6px">{"".join(cells)}</div>'
    return f'<div class="nbexec-stacks">{head}{summary}{row}</div>'


def rank_title(r: RankStacks) -> str:
    pid = f" (pid {r.pid})" if r.pid else ""
    state = f": waiting in {r.collective}" if r.collective else ""
    return f"rank {r.rank}{pid}{state}"


def rank_lines(r: RankStacks) -> list[str]:
    """One rank's column: its title, then each thread (main first), most recent call first."""
    out = [rank_title(r)]
    if r.error:
        out += textwrap.wrap(r.error, 60, initial_indent="  ", subsequent_indent="  ")
    for thread in sorted(r.threads, key=lambda t: not t.main):
        if not thread.is_nbexec:  # nbexec's own (the stdout flusher): in the saved file only
            out += _thread_lines(thread)
    if r.native:
        out += ["native (py-spy --native):", *(f"  {line}" for line in r.native.rstrip().splitlines())]
    return out


def _thread_lines(thread: ThreadStack) -> list[str]:
    frames = thread.shown_frames
    out = [f"{thread.title}:"]
    for frame in frames[:MAX_FRAMES]:
        out.append(f"  {frame.function}  {frame.location}")
        if frame.source:
            out.append(f"      {frame.source}")
    if len(frames) > MAX_FRAMES or thread.truncated:
        out.append("  ... (all frames are in the saved file)")
    return out


def _heading(snap: StackSnapshot) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    saved = f", saved to {short_path(str(snap.path))}" if snap.path is not None else ""
    return f"nbexec: stacks of {snap.run_dir.name} at {stamp}{saved}"


def _colour(r: RankStacks) -> str:
    if r.main is None:
        return markup.STATUS_COLOURS["FAILED"]
    return markup.STATUS_COLOURS["RUNNING"] if r.collective else markup.STATUS_COLOURS["KILLED"]


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
