"""Progress read off a tqdm-style bar in a rank's output, for scripts that send no progress events.

Two kinds of bar are read:

- tqdm's (Hugging Face's Trainer, accelerate, Lightning's ``TQDMProgressBar``):
  ``{desc}: {percent}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}]``,
  e.g. ``Epoch 0:  45%|████▌     | 9/20 [00:04<00:05,  2.01it/s, loss=0.3]``;
- Lightning's ``RichProgressBar`` (its default when ``rich`` is installed):
  ``Epoch 0/2 ━━━━━━━━━ 9/20 0:00:04 • 0:00:05 2.01it/s v_num: 0``.

:func:`parse_progress` turns the last bar on a line into a progress event
like the child API's (``step``, ``total``), plus ``rate`` (steps per
second), ``eta_s`` and ``desc``, marked ``source: "text"``.
"""

from __future__ import annotations

import re
from typing import Any

# n/total, then "[elapsed<remaining, rate unit" (tqdm's r_bar); the total may be "?"
_BAR = re.compile(
    r"(?P<n>\d+(?:\.\d+)?[kMGT]?)/(?P<total>\d+(?:\.\d+)?[kMGT]?|\?)\s*"
    r"\[(?P<elapsed>[\d:]+)(?:<(?P<remaining>[\d:]+|\?))?,\s*(?P<rate>[\d.]+|\?)\s*(?P<unit>s/it|\w*/s)"
)
_RICH = re.compile(
    r"(?P<n>\d+)/(?P<total>\d+)\s+(?P<elapsed>\d+:\d\d:\d\d)\s+\u2022\s+(?P<remaining>\d+:\d\d:\d\d|-:--:--)"
    r"\s+(?P<rate>[\d.]+)?(?P<unit>it/s|s/it)?"
)
_DESC = re.compile(r"^\s*(?P<desc>.*?):?\s*\d{1,3}%\|")
_RICH_DESC = re.compile(r"^\s*(?P<desc>.*?)\s*[\u2501\u2578\u257a]")  # text before the bar's line characters
_SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_progress(text: str) -> dict[str, Any] | None:
    """The progress a tqdm-style bar in ``text`` shows, or None when there is no bar."""
    match, start = _last(_BAR, text)  # the last bar on the line is the one on screen
    desc_re = _DESC
    if match is None:
        match, start = _last(_RICH, text)
        desc_re = _RICH_DESC
    if match is None:
        return None
    step = _number(match["n"])
    if step is None:
        return None
    event: dict[str, Any] = {"kind": "progress", "step": int(step), "source": "text"}
    total = _number(match["total"])
    if total:
        event["total"] = int(total)
    rate = _number(match["rate"])
    if rate:
        event["rate"] = 1.0 / rate if match["unit"] == "s/it" else rate
    remaining = _seconds(match["remaining"])
    if remaining is not None:
        event["eta_s"] = remaining
    desc = desc_re.match(text[start : match.start()])
    label = desc["desc"].strip(" ],") if desc else ""  # "] " ends the bar before it on the line
    if label:
        event["desc"] = label
    return event


def _last(pattern: re.Pattern[str], text: str) -> tuple[re.Match[str] | None, int]:
    """The last match in ``text``, and where its own part of the line starts (after the one before)."""
    last, start = None, 0
    for match in pattern.finditer(text):
        if last is not None:
            start = last.end()
        last = match
    return last, start


def _number(text: str | None) -> float | None:
    if not text or text == "?":
        return None
    scale = _SCALE.get(text[-1], None)
    if scale is None:
        return float(text)
    return float(text[:-1]) * scale


def _seconds(text: str | None) -> float | None:
    """``"01:02"`` -> 62, ``"1:00:05"`` -> 3605."""
    if not text or text == "?":
        return None
    total = 0
    for part in text.split(":"):
        if not part.isdigit():
            return None
        total = total * 60 + int(part)
    return float(total)
