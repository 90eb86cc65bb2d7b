"""Bytes -> whole lines: partial chunks, \\r redraws, invalid UTF-8, endless lines."""

from __future__ import annotations

from nbexec.runner.lines import COMPACT_AT, MAX_PENDING, LineSplitter, LogLine, display_text, terminal_picture


def test_lines_split_across_chunks_come_out_whole():
    s = LineSplitter()
    assert s.feed(b"hel") == []
    assert s.feed(b"lo\nwor") == [b"hello"]
    assert s.feed(b"ld\n\nlast") == [b"world", b""]
    assert s.flush() == [b"last"]
    assert s.flush() == []


def test_display_text_keeps_what_a_terminal_shows():
    assert display_text(b"\r 10%\r 20%\r100%") == "100%"
    assert display_text(b"windows line\r") == "windows line"
    assert display_text(b"bad \xff byte") == "bad \ufffd byte"
    assert display_text(b"") == ""


def test_a_line_that_never_ends_is_cut_instead_of_growing_memory():
    s = LineSplitter()
    chunk = b"x" * 4096
    out = []
    for _ in range(2 * MAX_PENDING // len(chunk) + 2):
        out += s.feed(chunk)
    assert out, "the pending buffer was never cut"
    assert all(len(line) <= MAX_PENDING + len(chunk) for line in out)
    assert b"".join(out) + b"".join(s.flush()) == chunk * (2 * MAX_PENDING // len(chunk) + 2)


def test_a_bar_redrawn_forever_stays_small_and_keeps_its_picture():
    s = LineSplitter()
    for i in range(2 * MAX_PENDING // 20):
        assert s.feed(f"\rstep {i:08d} of many".encode()) == [], "a redrawn line must not be cut into pieces"
        assert len(s.pending) <= COMPACT_AT + 64, "the unfinished line grew with every frame"
    assert display_text(s.pending) == f"step {2 * MAX_PENDING // 20 - 1:08d} of many"


def test_terminal_picture_overwrites_from_column_zero_by_character():
    assert terminal_picture(b"abcdef\rXY") == b"XYcdef"
    assert terminal_picture(b"plain line") == b"plain line"
    assert terminal_picture(b"done\r") == b"done"
    bar = " 50%|█████     |".encode()
    assert terminal_picture(b"\r" + " 10%|█         |".encode() + b"\r" + bar) == bar
    assert terminal_picture(b"\xff\xfe raw\rX") == b"X\xfe raw"  # bytes that are not UTF-8 survive as bytes


def test_log_line_format_marks_stderr_and_launcher():
    assert LogLine(1, "stdout", "hi", 0.0).format() == "[rank1] hi"
    assert LogLine(0, "stderr", "oops", 0.0).format() == "[rank0!] oops"
    assert LogLine(None, "stderr", "agent", 0.0).format() == "[launcher!] agent"
