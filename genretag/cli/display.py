"""Text for people: terminal-safe strings, long names shortened in the middle, clock times.

Display only: what is stored and what ``--json``/``--jsonl`` print keep every character.
"""

from __future__ import annotations

#: What stands for the characters a shortened name leaves out.
ELLIPSIS = "…"


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, newlines) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def shorten_middle(text: str, width: int) -> str:
    """``text`` (made printable) in at most ``width`` characters: the middle gives way, so a
    name's start and its distinguishing end (a track id's hash, a file's extension) stay."""
    text = printable(text)
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    keep = width - len(ELLIPSIS)
    head = keep // 2  # the end gets the odd character: an id's hash, a file's name
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def clock(seconds: float) -> str:
    """``m:ss`` of ``seconds`` (rounded to the second)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"
