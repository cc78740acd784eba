"""Whole-track tagging steps shared by the worker and ``genretag tag``: windows → record.

:func:`prepare_tracks` decodes only each track's windows, spread over its whole duration (with
the :class:`genretag.core.audio.protocol.Decoder` it is given), and judges the track as a whole
(too short, silent only if every window is). :func:`make_record` turns the model's per-window
probabilities into the track's tags (silent windows left out, ``window_aggregation``) and its
genre timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genretag.core.audio.aggregate import Aggregation, aggregate, silent_windows, vet_track
from genretag.core.audio.decoders import Decoder, WindowedAudio
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.core.timeline import build_timeline
from genretag.schemas import ModelManifest, TagRecord, TrackRef
from genretag.worker.infer import Tagger


@dataclass(frozen=True)
class WindowOptions:
    """Where windows go and how they are combined (from the worker's settings)."""

    max_windows: int = 4
    skip_start_s: float = 10.0
    skip_end_s: float = 10.0
    aggregation: Aggregation = "mean"
    max_track_s: float = 4 * 3600.0
    timeout_s: float = 60.0
    group_size: int = 8

    @classmethod
    def from_settings(cls, settings: object, group_size: int = 8) -> WindowOptions:
        """The window options of any settings object that has the worker's field names."""
        return cls(max_windows=settings.max_windows,  # type: ignore[attr-defined]
                   skip_start_s=settings.window_skip_start_s,  # type: ignore[attr-defined]
                   skip_end_s=settings.window_skip_end_s,  # type: ignore[attr-defined]
                   aggregation=settings.window_aggregation,  # type: ignore[attr-defined]
                   max_track_s=settings.max_track_seconds,  # type: ignore[attr-defined]
                   timeout_s=settings.decode_timeout_s,  # type: ignore[attr-defined]
                   group_size=group_size)

    def placement(self, manifest: ModelManifest) -> Placement:
        return Placement(clip_seconds=manifest.clip_seconds, max_windows=self.max_windows,
                         skip_start_s=self.skip_start_s, skip_end_s=self.skip_end_s)


@dataclass
class Prepared:
    """A track whose windows decoded and passed the whole-track checks: ready for the model."""

    ref: TrackRef
    windows: np.ndarray
    duration_s: float
    starts: list[float] = field(default_factory=lambda: [0.0])
    silent: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))


def finish_track(ref: TrackRef, audio: WindowedAudio, manifest: ModelManifest) -> Prepared:
    """Decoded windows → Prepared; a too-short or wholly silent track → PermanentError."""
    silent = silent_windows(audio.windows, audio.lengths)
    vet_track(audio.duration_s, audio.decoded_samples / manifest.sample_rate, silent,
              manifest.min_seconds, track_id=ref.track_id)
    return Prepared(ref=ref, windows=audio.windows, duration_s=audio.duration_s,
                    starts=list(audio.starts), silent=silent)


def prepare_tracks(refs: Sequence[TrackRef], sources: Sequence[AudioSource],
                   manifest: ModelManifest, options: WindowOptions,
                   decoder: Decoder) -> list[Prepared | Exception]:
    """Decode (with ``decoder``) and judge every (already vetted) source; one Prepared or
    exception per ref."""
    decoded = decoder.decode_tracks(
        sources, manifest.sample_rate, options.placement(manifest), timeout_s=options.timeout_s,
        max_track_s=options.max_track_s, track_ids=[r.track_id for r in refs])
    out: list[Prepared | Exception] = []
    for ref, audio in zip(refs, decoded, strict=True):
        if isinstance(audio, PermanentError):
            out.append(audio)
            continue
        try:
            out.append(finish_track(ref, audio, manifest))
        except Exception as exc:  # noqa: BLE001 - this track only
            out.append(exc)
    return out


def make_record(prepared: Prepared, window_probs: np.ndarray, tagger: Tagger,
                aggregation: Aggregation = "mean") -> TagRecord:
    """The track's tag record: aggregated probabilities, labels over threshold, timeline."""
    manifest = tagger.manifest
    row = aggregate(np.asarray(window_probs, dtype=np.float64), prepared.silent, aggregation)
    return TagRecord(
        track_id=prepared.ref.track_id,
        model_version=manifest.version,
        probabilities={k: round(float(p), 6) for k, p in zip(manifest.labels, row, strict=True)},
        labels=tagger.labels_over_threshold(row),
        duration_s=round(prepared.duration_s, 3),
        uri=prepared.ref.uri,
        timeline=build_timeline(manifest.labels, manifest.clip_seconds, prepared.starts,
                                window_probs, prepared.silent),
    )
