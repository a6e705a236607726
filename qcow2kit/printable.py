"""Strings read from an image, made safe for a terminal in qcow2kit's own output.

Control characters (ANSI escape sequences start with one), line and paragraph
separators, bidirectional overrides and other format characters are escaped as
Python writes them (\\n, \\x1b, \\u202e); bytes that are not UTF-8 as \\xNN. Column
widths count what a terminal shows: two columns for wide East Asian characters,
none for combining marks. qemu-compatible output does not come through here: it
stays byte-identical to qemu's.
"""
from __future__ import annotations

_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # bytes kept by the surrogateescape handler


def _escape_char(ch: str) -> str:
    if ch.isprintable():
        return ch
    if ord(ch) in _SURROGATE_ESCAPES:
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return repr(ch)[1:-1]


def escape(text: str) -> str:
    """text with every character a terminal would act on or not show escaped."""
    return "".join(_escape_char(ch) for ch in text)


def width(text: str) -> int:
    """Terminal columns of (escaped) text."""
    if text.isascii():  # printable ASCII once escaped: a column each
        return len(text)
    import unicodedata  # here: ASCII names and the commands that print none go without it

    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int) -> str:
    """text escaped, padded with spaces on the right to columns terminal columns."""
    safe = escape(text)
    return safe + " " * max(0, columns - width(safe))
