"""The FFmpeg command line as a :class:`genretag.core.audio.protocol.Decoder`.

A whole file is one FFmpeg process (:func:`genretag.core.audio.ffmpeg.decode.decode_audio`);
tracks' windows and durations go ``group_size`` local files per probe and per decode process
(:mod:`genretag.core.audio.ffmpeg.seek`), each remote (http) file alone. It holds no process
between calls. It is the reference the libav backend is held to, and it reads every remote
source, for both backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.ffmpeg.seek import decode_windows_many, durations_many
from genretag.core.audio.finite import finite_tracks, require_finite
from genretag.core.audio.placement import Placement
from genretag.core.audio.protocol import (DEFAULT_MAX_TRACK_S, DEFAULT_TIMEOUT_S, DecodeOptions,
                                          DecoderName, Duration, WindowedAudio, ids_for)
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError

#: Files per FFmpeg process for windows and probes (start-up is ~8 ms/file at 8, ~63 ms at 1).
DEFAULT_GROUP_SIZE = 8


class FFmpegDecoder:
    """The FFmpeg command line: one process per file, or per ``group_size`` files' windows."""

    def __init__(self, group_size: int = DEFAULT_GROUP_SIZE) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size

    @property
    def name(self) -> DecoderName:
        return "ffmpeg"

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray:
        wave = decode_audio(source, opts, track_id)
        require_finite(wave, opts.sample_rate, track_id)
        return wave

    def decode_tracks(self, sources: Sequence[AudioSource], sample_rate: int,
                      placement: Placement, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      max_track_s: float = DEFAULT_MAX_TRACK_S,
                      track_ids: Sequence[str | None] | None = None,
                      ) -> list[WindowedAudio | PermanentError]:
        ids = ids_for(sources, track_ids)
        found = decode_windows_many(sources, sample_rate, placement, timeout_s=timeout_s,
                                    max_track_s=max_track_s, track_ids=ids,
                                    group_size=self.group_size)
        return finite_tracks(found, sample_rate, ids)

    def durations(self, sources: Sequence[AudioSource], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  max_track_s: float = DEFAULT_MAX_TRACK_S,
                  track_ids: Sequence[str | None] | None = None) -> list[Duration | PermanentError]:
        return durations_many(sources, timeout_s=timeout_s, max_track_s=max_track_s,
                              track_ids=track_ids, group_size=self.group_size)

    def close(self) -> None:
        """Nothing to stop: no process outlives a call."""
