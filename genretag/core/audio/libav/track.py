"""A whole track's windows in one libav pass: header, placement, seeks, checks, all in-process.

The decoder processes' answer to :mod:`genretag.core.audio.ffmpeg.seek` (whose FFmpeg path needs
one process to read the headers and another to decode): :func:`decode_track` opens the file once,
reads its duration (a bitrate guess, as libavformat warns, is measured first), places the windows
with :func:`genretag.core.audio.placement.place_windows`, decodes them and checks the header
against what it found: packets past the claimed end, or a window shorter than the duration allowed
(:func:`genretag.core.audio.placement.header_lied`), make the duration be measured packet by
packet (no decode) and the windows placed and decoded again once. A file with no usable duration
or windows gets its opening clip (``decoded``). Same rules, same outcomes as the FFmpeg path. The
links of a chained Ogg file are one timeline (:class:`genretag.core.audio.libav.media.Media`):
its duration is its links' together.

Stays free of the project's heavier imports: it runs inside the decoder processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from genretag.core.audio.libav.decode import decode_file, decode_spans
from genretag.core.audio.libav.media import Media, opened
from genretag.core.audio.libav.request import UNDECODABLE, LibavError, Request
from genretag.core.audio.placement import Placement, header_lied, place_windows


@dataclass(frozen=True)
class TrackRequest:
    """One file's windows: where they go (``placement``) and how far a measure may read."""

    file: Request
    placement: Placement
    max_track_s: float


@dataclass
class TrackWindows:
    """What :func:`decode_track` found: the spans lie back to back in the output buffer."""

    duration_s: float
    duration_from: str  # "header", "measured" or "decoded"
    starts: list[float]
    lengths: list[int] = field(default_factory=list)


def decode_track(req: TrackRequest, out: np.ndarray) -> TrackWindows:
    """Decode ``req``'s windows into ``out`` (at least ``max_windows`` clips of samples).

    Raises :class:`genretag.core.audio.libav.decode.LibavError` exactly where a whole-file decode
    would.
    """
    rate, p = req.file.sample_rate, req.placement
    with opened(req.file, notice_estimate=True) as media:
        header = media.header()
        if header is not None and not media.estimated:
            found = _windows(media, rate, header, "header", p, out)
            past = media.audio_past(header)
            lied = header_lied(header, found.starts, found.lengths, p.clip_seconds, rate, past)
            if any(found.lengths) and not lied:
                return found
            if not lied:  # nothing decoded where the header put audio: the opening clip
                return _opening_clip(req, out)
        measured = media.measure(req.max_track_s)
        if measured is not None:
            media.rewind()
            found = _windows(media, rate, measured, "measured", p, out)
            if any(found.lengths):
                return found
    return _opening_clip(req, out)


def track_duration(req: TrackRequest) -> tuple[float | None, str]:
    """``req``'s duration before decoding, by :func:`decode_track`'s first rule: the header's
    unless it has none or libavformat only estimated it, then measured from the packets.

    Returns (seconds or None, ``header``/``measured``/``unknown``); a file libav cannot open at
    all is ``unknown``; the file checks of :func:`genretag.core.audio.libav.media.open_checked`
    still raise.
    """
    try:
        with opened(req.file, notice_estimate=True) as media:
            header = media.header()
            if header is not None and not media.estimated:
                return header, "header"
            measured = media.measure(req.max_track_s)
            return measured, "measured" if measured is not None else "unknown"
    except LibavError as exc:
        if exc.reason != UNDECODABLE:
            raise
        return None, "unknown"


def _opening_clip(req: TrackRequest, out: np.ndarray) -> TrackWindows:
    """No duration, or no window decoded: the opening clip as a whole-file decode gives it
    (one window, the duration as decoded), or exactly the error that decode raises."""
    rate = req.file.sample_rate
    clip = round(req.placement.clip_seconds * rate)
    [wave] = decode_file(replace(req.file, max_samples=clip, windows=(), offset_s=0.0), out)
    return TrackWindows(len(wave) / rate, "decoded", [0.0], [len(wave)])


def _windows(media: Media, rate: int, duration_s: float, how: str, p: Placement,
             out: np.ndarray) -> TrackWindows:
    starts = place_windows(duration_s, p)
    spans = decode_spans(media, rate, [(s, p.clip_seconds) for s in starts],
                         out[: len(starts) * round(p.clip_seconds * rate)])
    lengths = [len(s) for s in spans]
    if len(starts) == 1 and starts[0] == 0.0 and lengths[0] < round(p.clip_seconds * rate):
        duration_s = lengths[0] / rate  # the whole track is in that window: exact
    return TrackWindows(duration_s, how, starts, lengths)
