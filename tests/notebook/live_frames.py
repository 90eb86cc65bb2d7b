"""What the live view's widget showed, rebuilt from a kernel's iopub messages (for tests and benchmarks).

The view's first display output holds the widget (``application/vnd.jupyter.widget-view+json``,
its model id); the widget's state comes in a ``comm_open`` and then ``comm_msg`` updates.
Applying them in order gives every frame the browser was sent: its head (HTML of the status,
phase, progress...) and its tail (numbered lines).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@dataclass
class Frame:
    """The widget's state after one message, and when the kernel sent it (``time.time()``)."""

    sent: float
    head: str
    lines: list[list[Any]]

    @property
    def head_text(self) -> str:
        return html.unescape(re.sub(r"<[^>]+>", " ", self.head))

    @property
    def tail(self) -> list[str]:
        return [str(text) for _, text, _ in self.lines]

    @property
    def text(self) -> str:
        return self.head_text + "\n" + "\n".join(self.tail)

    @property
    def phase(self) -> str | None:
        found = re.search(r'data-phase="(\w+)"', self.head)
        return found.group(1) if found else None


def widget_model_id(messages: list[dict[str, Any]]) -> str | None:
    """The model id of the first live view widget displayed in these messages."""
    for m in messages:
        if m["msg_type"] in ("display_data", "update_display_data"):
            view = m["content"]["data"].get(WIDGET_MIME)
            if view:
                return str(view["model_id"])
    return None


def frames(messages: list[dict[str, Any]], model_id: str | None = None) -> list[Frame]:
    """Every state of the widget ``model_id`` (default: the first one displayed), in order."""
    model_id = model_id or widget_model_id(messages)
    state: dict[str, Any] = {}
    out: list[Frame] = []
    for m in messages:
        if m["msg_type"] not in ("comm_open", "comm_msg") or m["content"].get("comm_id") != model_id:
            continue
        data = m["content"].get("data") or {}
        if "state" not in data:
            continue
        state.update(data["state"])
        out.append(Frame(sent=m["sent"] if "sent" in m else 0.0, head=str(state.get("head", "")),
                         lines=list(state.get("lines", []))))
    return out
