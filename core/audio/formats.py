"""Which files count as audio: the one suffix list the producer's directory scan and the
training folder reader share (FFmpeg decodes them all; a suffix is only a cheap first filter)."""

from __future__ import annotations

from collections.abc import Iterable

#: Audio file suffixes picked up from folders (lower-case, with the dot).
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".mp3", ".au", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff",
    ".wma",
)


def normalise_extensions(extensions: Iterable[str]) -> set[str]:
    """``mp3``/``.MP3`` → ``.mp3``: extensions compare case-insensitively, dot optional."""
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if ext:
            out.add(ext if ext.startswith(".") else f".{ext}")
    return out
