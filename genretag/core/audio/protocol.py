"""What every audio backend is: the :class:`Decoder` protocol and the values it deals in.

Training and serving hold a :class:`Decoder` from
:func:`genretag.core.audio.decoders.open_decoder` and call only these methods, whichever backend is
behind it (the FFmpeg command line, :mod:`genretag.core.audio.ffmpeg`, or the libav decoder
processes, :mod:`genretag.core.audio.libav`).
Both backends follow the same shared rules (:mod:`~genretag.core.audio.uri` vetting,
:mod:`~genretag.core.audio.formats`, :mod:`~genretag.core.audio.placement`,
:mod:`~genretag.core.audio.finite`), so they give the same samples for whole-file decodes, close
samples after a seek, and the same reason codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.core.settings import DecodeSection, DecoderName

#: The ``decode`` section's defaults, for calls made outside a worker (training, tests, bench).
DEFAULT_TIMEOUT_S: float = DecodeSection.model_fields["timeout_s"].default
DEFAULT_MAX_TRACK_S: float = DecodeSection.model_fields["max_track_s"].default
#: Where a track's duration came from: its header (checked against what decoding found), a
#: packet-by-packet measure (no, or only an estimated, header; or the header lied), the decoded
#: opening clip (nothing else worked), or nowhere (``unknown``: only :meth:`Decoder.durations`).
DurationFrom = Literal["header", "measured", "decoded", "unknown"]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode a whole file: rate, length cap (``max_seconds`` bounds the output), limits."""

    sample_rate: int
    max_seconds: float
    timeout_s: float = DEFAULT_TIMEOUT_S
    offset_seconds: float = 0.0


@dataclass(frozen=True)
class WindowedAudio:
    """A track's decoded windows: ``windows[i]`` (zero-padded to a clip) starts at ``starts[i]``
    seconds and holds ``lengths[i]`` real samples; ``duration_s`` is the whole track's."""

    duration_s: float
    starts: list[float]
    windows: np.ndarray
    lengths: list[int]
    duration_from: DurationFrom = "header"

    @property
    def decoded_samples(self) -> int:
        return int(sum(self.lengths))

    @classmethod
    def from_spans(cls, duration_s: float, starts: Sequence[float], waves: Sequence[np.ndarray],
                   clip_samples: int, duration_from: DurationFrom) -> WindowedAudio:
        """Decoded windows (each at most a clip; shorter ones zero-padded) as one array."""
        lengths = [min(len(w), clip_samples) for w in waves]
        out = np.zeros((len(waves), clip_samples), dtype=np.float32)
        for i, (w, n) in enumerate(zip(waves, lengths, strict=True)):
            out[i, :n] = w[:n]
        return cls(duration_s=duration_s, starts=list(starts), windows=out, lengths=lengths,
                   duration_from=duration_from)


@dataclass(frozen=True)
class Duration:
    """A track's length before any window is decoded: ``seconds`` (None: unknown) and
    ``duration_from`` (``header``, or ``measured`` when the header had none or only a bitrate
    estimate). A header that lies is caught only by :meth:`Decoder.decode_tracks`."""

    seconds: float | None
    duration_from: DurationFrom = "header"


def ids_for(sources: Sequence[AudioSource], track_ids: Sequence[str | None] | None,
            ) -> list[str | None]:
    """One track id (or None) per source: ``track_ids`` checked, or all None."""
    ids = list(track_ids) if track_ids is not None else [None] * len(sources)
    if len(ids) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(ids)} track ids")
    return ids


class Decoder(Protocol):
    """One audio backend: whole files, a track's windows over its whole duration, durations.

    Every method takes vetted sources (:func:`genretag.core.audio.uri.resolve_source`) and gives
    mono float32 at the asked rate, finite everywhere, or the file's :class:`PermanentError`
    (never another exception for a bad file). Thread-safe: a worker calls it from its decode
    threads.
    """

    @property
    def name(self) -> DecoderName:
        """``libav`` or ``ffmpeg``: what a model manifest records."""
        ...

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray:
        """The whole file from ``opts.offset_seconds``, at most ``opts.max_seconds``; raises
        the file's :class:`PermanentError`."""
        ...

    def decode_tracks(self, sources: Sequence[AudioSource], sample_rate: int,
                      placement: Placement, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      max_track_s: float = DEFAULT_MAX_TRACK_S,
                      track_ids: Sequence[str | None] | None = None,
                      ) -> list[WindowedAudio | PermanentError]:
        """Each track's windows placed over its whole duration (:func:`place_windows`), one
        result per source, in order. ``max_track_s`` caps how much of a file whose header is
        missing, estimated or lying is read to measure it."""
        ...

    def durations(self, sources: Sequence[AudioSource], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  max_track_s: float = DEFAULT_MAX_TRACK_S,
                  track_ids: Sequence[str | None] | None = None) -> list[Duration | PermanentError]:
        """Each track's :class:`Duration`, nothing decoded; a file that cannot be read at all
        gets ``Duration(None, "unknown")``, one that fails vetting its :class:`PermanentError`."""
        ...

    def close(self) -> None:
        """Stop whatever the backend runs (decoder processes); idempotent."""
        ...
