"""The libav decoder processes as a :class:`genretag.core.audio.protocol.Decoder`.

Each local file is one request to one of ``processes`` long-lived decoder processes
(:class:`genretag.core.audio.libav.pool.DecoderPool`): a whole-file decode, a track's windows
(the process reads the header, places, seeks and checks them itself, no FFmpeg process at all),
or a duration. A remote (http) source is handed to ``remote``, the decoder
:func:`genretag.core.audio.decoders.open_decoder` gives this one (the FFmpeg backend, whose
protocol whitelist covers http): the decoder processes open local descriptors only, and this
package never imports the FFmpeg backend itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genretag.core.audio.finite import finite_tracks, require_finite
from genretag.core.audio.libav.pool import DecoderPool
from genretag.core.audio.placement import Placement
from genretag.core.audio.protocol import (DEFAULT_MAX_TRACK_S, DEFAULT_TIMEOUT_S, DecodeOptions,
                                          Decoder, DecoderName, Duration, WindowedAudio, ids_for)
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError


class LibavDecoder:
    """``processes`` libav decoder processes for local files; ``remote`` for http(s) ones."""

    def __init__(self, processes: int, remote: Decoder,
                 max_file_bytes: int | None = None) -> None:
        self.remote = remote
        self.pool = DecoderPool(processes, max_file_bytes=max_file_bytes)

    @property
    def name(self) -> DecoderName:
        return "libav"

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray:
        if not source.is_local:
            return self.remote.decode_audio(source, opts, track_id)
        wave = self.pool.decode_audio(source, opts, track_id)
        require_finite(wave, opts.sample_rate, track_id)
        return wave

    def decode_tracks(self, sources: Sequence[AudioSource], sample_rate: int,
                      placement: Placement, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      max_track_s: float = DEFAULT_MAX_TRACK_S,
                      track_ids: Sequence[str | None] | None = None,
                      ) -> list[WindowedAudio | PermanentError]:
        ids = ids_for(sources, track_ids)
        results: list[WindowedAudio | PermanentError | None] = [None] * len(sources)
        for k, source in enumerate(sources):
            if source.is_local:
                try:
                    [results[k]] = finite_tracks([self.pool.decode_track(
                        source, sample_rate, placement, timeout_s=timeout_s,
                        max_track_s=max_track_s, track_id=ids[k])], sample_rate, [ids[k]])
                except PermanentError as exc:
                    results[k] = exc
        remote = [k for k, s in enumerate(sources) if not s.is_local]
        if remote:
            found = self.remote.decode_tracks([sources[k] for k in remote], sample_rate,
                                              placement, timeout_s=timeout_s,
                                              max_track_s=max_track_s,
                                              track_ids=[ids[k] for k in remote])
            for k, res in zip(remote, found, strict=True):
                results[k] = res
        return results  # type: ignore[return-value] - every slot is set above

    def durations(self, sources: Sequence[AudioSource], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  max_track_s: float = DEFAULT_MAX_TRACK_S,
                  track_ids: Sequence[str | None] | None = None) -> list[Duration | PermanentError]:
        ids = ids_for(sources, track_ids)
        results: list[Duration | PermanentError | None] = [None] * len(sources)
        for k, source in enumerate(sources):
            if source.is_local:
                try:
                    results[k] = self.pool.duration(source, timeout_s=timeout_s,
                                                    max_track_s=max_track_s, track_id=ids[k])
                except PermanentError as exc:
                    results[k] = exc
            else:
                [results[k]] = self.remote.durations([source], timeout_s=timeout_s,
                                                     max_track_s=max_track_s, track_ids=[ids[k]])
        return results  # type: ignore[return-value] - every slot is set above

    def close(self) -> None:
        """Stop the decoder processes."""
        self.pool.close()
        self.remote.close()
