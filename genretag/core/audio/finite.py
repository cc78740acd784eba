"""Decoded audio is finite, or the track is refused: the one rule both backends and training apply.

A float WAV (or any float codec) can carry NaN or infinite samples. They pass the decoders
untouched (and a resampler spreads each one over its neighbours), and one of them in a window
turns the model's output for the whole track into noise: an all-NaN file came out tagged
``noise 0.957``, a clean chiptune with one NaN sample in a thousand as ``noise``. So the samples
that would reach the model are checked, every time, and a track with any that is not finite is
dead-lettered ``invalid_audio`` with how many there were and where the first one is, not tagged.
Zeroing them instead was rejected: after resampling a single bad input sample has become a run
of them, and a file with broken samples is broken, not quiet.

Both backends call :func:`require_finite` on what they return (:func:`finite_tracks` for a
batch of tracks), so the worker and training (whose clips come from the same decoders) apply it
alike; a track whose non-finite samples lie only outside its windows is tagged from its windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genretag.core.audio.protocol import WindowedAudio
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode


def require_finite(samples: np.ndarray, sample_rate: int, track_id: str | None = None,
                   starts: Sequence[float] | None = None) -> None:
    """Raise ``invalid_audio`` if any of ``samples`` is NaN or infinite.

    ``samples``: a decoded file (1-D) or a track's windows (one row per window, starting at
    ``starts`` seconds), at ``sample_rate``.
    """
    finite = np.isfinite(samples)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    first = int(np.argmin(finite.ravel()))
    if samples.ndim == 2:
        row, col = divmod(first, samples.shape[1])
        at = (starts[row] if starts is not None else 0.0) + col / sample_rate
        where = f"of the {len(samples)} windows' {finite.size} samples"
    else:
        at, where = first / sample_rate, f"of {finite.size} decoded samples"
    raise PermanentError(
        ReasonCode.INVALID_AUDIO,
        f"{bad} {where} are NaN or infinite (the first at {at:.3f} s): the file's audio is "
        "broken", track_id=track_id)


def finite_tracks(results: Sequence[WindowedAudio | PermanentError], sample_rate: int,
                  track_ids: Sequence[str | None]) -> list[WindowedAudio | PermanentError]:
    """``results`` with each track whose windows are not all finite replaced by its error."""
    out: list[WindowedAudio | PermanentError] = []
    for audio, track_id in zip(results, track_ids, strict=True):
        if not isinstance(audio, PermanentError):
            try:
                require_finite(audio.windows, sample_rate, track_id, audio.starts)
            except PermanentError as exc:
                audio = exc
        out.append(audio)
    return out
