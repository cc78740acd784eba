"""Where a track's model windows go: the coverage policy (docs/coverage.md).

A track up to :data:`WHOLE_TRACK_CLIPS` clips long is analysed end to end, window after window
(musicnn's taggram: a 30 s clip is 10 windows of 3 s); a longer one gets a window every
``every_s`` seconds (at least :data:`WHOLE_TRACK_CLIPS`) spread over its whole duration, intro
and outro skipped, up to ``max_windows``. Serving and training evaluation both place windows with
:func:`place_windows`, from the track's duration alone, so only those seconds are ever decoded
(either decoder seeks to each start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the decoder processes import this module: keep it free of pydantic
    from genretag.core.settings import WindowSection

#: Hard cap on windows per track, whatever the settings say (bounds memory and the timeline).
MAX_WINDOWS_CAP = 256
#: A track up to this many clips long is analysed end to end; a longer one never gets fewer.
WHOLE_TRACK_CLIPS = 10
#: A remainder under this fraction of a clip earns no window of its own: the windows spread to
#: cover it (a few ms apart), so encoder padding (a 30 s mp3 is 30.04 s) or a header that
#: counts it does not add an overlapping window; both decoders then agree on the count.
COUNT_SLACK_CLIPS = 0.1


def windows_for(length: float, per_window: float) -> int:
    """Windows of ``per_window`` (seconds or samples) that ``length`` earns, at least one."""
    return max(1, math.ceil(length / per_window - COUNT_SLACK_CLIPS))


@dataclass(frozen=True)
class Placement:
    """How windows are spread: at most ``max_windows`` clips of ``clip_seconds``, skipping the
    first ``skip_start_s`` and last ``skip_end_s`` seconds of tracks long enough to spare them.

    ``every_s``: a track longer than :data:`WHOLE_TRACK_CLIPS` clips gets one window per
    ``every_s`` seconds (never denser than back to back); 0 places as many as fit back to back.
    """

    clip_seconds: float
    max_windows: int = 1  # a worker's come from its windows section (Placement.of)
    skip_start_s: float = 0.0
    skip_end_s: float = 0.0
    every_s: float = 0.0

    @classmethod
    def of(cls, clip_seconds: float, windows: WindowSection) -> Placement:
        """The placement of a model's ``clip_seconds`` windows under the ``windows`` settings."""
        return cls(clip_seconds, windows.max_windows, windows.skip_start_s, windows.skip_end_s,
                   windows.every_s)

    def count(self, duration_s: float) -> int:
        """How many windows a ``duration_s`` track gets (finite, longer than a clip)."""
        back_to_back = windows_for(duration_s, self.clip_seconds)
        if back_to_back <= WHOLE_TRACK_CLIPS or self.every_s <= self.clip_seconds:
            return min(self.max_windows, back_to_back)
        spread = windows_for(duration_s, self.every_s)
        return min(self.max_windows, max(WHOLE_TRACK_CLIPS, spread))

    def __post_init__(self) -> None:
        if self.clip_seconds <= 0 or not 1 <= self.max_windows <= MAX_WINDOWS_CAP:
            raise ValueError(f"clip_seconds={self.clip_seconds} must be > 0 and max_windows="
                             f"{self.max_windows} in [1, {MAX_WINDOWS_CAP}]")
        if self.skip_start_s < 0 or self.skip_end_s < 0 or not self.every_s >= 0:
            raise ValueError("skip_start_s, skip_end_s and every_s must be >= 0")


def place_windows(duration_s: float, placement: Placement) -> list[float]:
    """Start times (seconds, ascending) of the windows of a ``duration_s`` track.

    A track no longer than a clip gets one window at 0 (zero-padded later). Otherwise it gets
    :meth:`Placement.count` evenly spaced windows over the track minus the skipped intro and
    outro; a track too short to spare them without losing a window skips proportionally less
    (a clip analysed end to end skips nothing). A single window sits in the middle of the span
    (intros and outros are atypical).
    """
    clip = placement.clip_seconds
    if not math.isfinite(duration_s) or duration_s <= clip:
        return [0.0]
    count = placement.count(duration_s)
    skips = placement.skip_start_s + placement.skip_end_s
    spare = duration_s - clip * count  # what can be skipped without losing a window
    scale = 0.0 if spare <= 0 or skips <= 0 else min(1.0, spare / skips)
    lo = placement.skip_start_s * scale
    hi = duration_s - placement.skip_end_s * scale
    span = hi - lo
    if count <= 1:
        return [round(lo + (span - clip) / 2, 3)]
    step = (span - clip) / (count - 1)
    return [round(lo + k * step, 3) for k in range(count)]


#: Seconds at a header's claimed end checked for audio past it (the file goes on).
TAIL_SECONDS = 1.0
#: Audio past the claimed end, or missing from a window, beyond this means the header lied.
MISMATCH_SECONDS = 0.5


def header_lied(duration_s: float, starts: Sequence[float], lengths: Sequence[int],
                clip_seconds: float, sample_rate: int, past_end_s: float = 0.0) -> bool:
    """Whether a header's ``duration_s`` was wrong, judged from what decoding found.

    ``past_end_s`` seconds of audio were found after the claimed end (the file is longer), or a
    window came back shorter than the duration allowed (the file is shorter). Both decoders
    judge by this one rule, so they measure the same files.
    """
    if past_end_s > MISMATCH_SECONDS:
        return True
    slack = MISMATCH_SECONDS * sample_rate
    for start, n in zip(starts, lengths, strict=False):
        expected = min(clip_seconds, max(0.0, duration_s - start)) * sample_rate
        if n < expected - slack:
            return True
    return False
