"""What a decoder process is asked (:class:`Request`) and how it refuses a file
(:class:`LibavError`).

Free of the project's heavier imports (pydantic, kafka, redis): the decoder processes load it,
and each costs ~50 MiB less for it. The reasons are values of :class:`genretag.schemas.ReasonCode`.
"""

from __future__ import annotations

from dataclasses import dataclass

from genretag.core.audio.formats import AUDIO_DEMUXERS

MISSING_FILE, EMPTY_FILE, TOO_LARGE, UNDECODABLE, DISALLOWED_URI = (
    "missing_file", "empty_file", "too_large", "undecodable", "disallowed_uri")


class LibavError(Exception):
    """Why a file did not decode: ``reason`` is a :class:`genretag.schemas.ReasonCode` value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """One file to decode: whole (``windows`` empty) or by ``(start_s, duration_s)`` windows."""

    path: str
    sample_rate: int
    max_samples: int
    max_file_bytes: int | None = None
    offset_s: float = 0.0
    windows: tuple[tuple[float, float], ...] = ()
    #: Demuxers that may be probed (by default the FFmpeg CLI path's whitelist).
    formats: str = AUDIO_DEMUXERS
    #: (st_dev, st_ino) of the vetted file: then ``path`` is the parent's ``/proc/PID/fd/N``
    #: and the opened file must be that very file.
    identity: tuple[int, int] | None = None


def why(exc: BaseException) -> str:
    """A library error in a few words (its strerror, else its text), at most 300 characters."""
    return (getattr(exc, "strerror", None) or str(exc))[:300]
