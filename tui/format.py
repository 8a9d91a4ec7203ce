"""Turning snapshot numbers and paths into short, safe text for the console."""

from __future__ import annotations

import humanize

DASH = "—"


def display_path(path: str) -> str:
    """A path that is safe to print on a terminal.

    Undecodable bytes arrive as lone surrogates (``os.fsdecode`` with
    surrogateescape): show them as ``\\xNN``. Control characters could move the
    cursor or recolour the screen, so they are escaped too.
    """
    if path.isprintable():
        return path
    out = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def tail(text: str, width: int) -> str:
    """text in at most `width` characters, its end kept: "…" and the last ones (a path's leaf matters)."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - max(0, width - 1):] if width > 0 else ""


def duration(seconds: float | None) -> str:
    """Compact h/m/s, e.g. ``2h 05m 12s``; a dash when unknown."""
    if seconds is None or seconds < 0:
        return DASH
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        days, hours = divmod(hours, 24)
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def count(value: int) -> str:
    return humanize.intcomma(value)


def size(num_bytes: float) -> str:
    return humanize.naturalsize(num_bytes, binary=True)


def rate(value: float) -> str:
    """A per-second number; below 10 it keeps one decimal so a trickle is not 0."""
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return humanize.intcomma(int(round(value)))


def bytes_per_second(value: float) -> str:
    return f"{size(value)}/s"


def age(seconds: float) -> str:
    """How long ago, in the largest sensible unit: ``12s``, ``4m``, ``3h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
