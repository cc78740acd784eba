"""Whole-track tagging steps shared by the worker and ``genretag tag``: windows → record.

:func:`prepare_tracks` decodes only each track's windows, spread over its whole duration (with
the :class:`genretag.core.audio.protocol.Decoder` it is given), and judges the track as a whole
(too short, silent only if every window is). :func:`make_record` turns the model's per-window
probabilities into the track's tags (silent windows left out, ``window_aggregation``) and its
genre timeline; :func:`track_embedding` pools its window embeddings into the track's vector
(contract v2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genretag.core.audio.aggregate import aggregate, silent_windows, vet_track
from genretag.core.audio.decoders import Decoder, WindowedAudio
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.core.settings import Aggregation, DecodeSection, WindowSection
from genretag.core.timeline import build_timeline
from genretag.schemas import ModelManifest, TagRecord, TrackRef
from genretag.worker.infer import Tagger


@dataclass
class Prepared:
    """A track whose windows decoded and passed the whole-track checks: ready for the model."""

    ref: TrackRef
    windows: np.ndarray
    duration_s: float
    starts: list[float] = field(default_factory=lambda: [0.0])
    silent: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))
    #: The same track's windows in the model set's further layouts (other sample rate or
    #: window length), by layout index; layout 0 is this one.
    other_layouts: dict[int, Prepared] = field(default_factory=dict)

    def in_layout(self, layout: int) -> Prepared:
        """This track decoded for the model set's layout ``layout``."""
        return self if layout == 0 else self.other_layouts[layout]


def finish_track(ref: TrackRef, audio: WindowedAudio, manifest: ModelManifest) -> Prepared:
    """Decoded windows → Prepared; a too-short or wholly silent track → PermanentError."""
    silent = silent_windows(audio.windows, audio.lengths)
    vet_track(audio.duration_s, audio.decoded_samples / manifest.sample_rate, silent,
              manifest.min_seconds, track_id=ref.track_id)
    return Prepared(ref=ref, windows=audio.windows, duration_s=audio.duration_s,
                    starts=list(audio.starts), silent=silent)


def prepare_tracks(refs: Sequence[TrackRef], sources: Sequence[AudioSource],
                   manifest: ModelManifest, windows: WindowSection, decode: DecodeSection,
                   decoder: Decoder) -> list[Prepared | Exception]:
    """Decode (with ``decoder``) and judge every (already vetted) source; one Prepared or
    exception per ref."""
    decoded = decoder.decode_tracks(
        sources, manifest.sample_rate, Placement.of(manifest.clip_seconds, windows),
        timeout_s=decode.timeout_s, max_track_s=decode.max_track_s,
        track_ids=[r.track_id for r in refs])
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
                aggregation: Aggregation) -> TagRecord:
    """The track's tag record: aggregated probabilities, labels over threshold, timeline."""
    manifest = tagger.manifest
    row = aggregate(np.asarray(window_probs, dtype=np.float64), prepared.silent, aggregation)
    return TagRecord(
        track_id=prepared.ref.track_id,
        model_version=manifest.version,
        probabilities={k: round(float(p), 6) for k, p in zip(manifest.labels, row, strict=True)},
        labels=tagger.labels_over_threshold(row),
        primary_genre=manifest.primary_genre(row),
        duration_s=round(prepared.duration_s, 3),
        uri=prepared.ref.uri,
        timeline=build_timeline(manifest.labels, manifest.clip_seconds, prepared.starts,
                                window_probs, prepared.silent),
    )


#: Largest magnitude float16 holds: the stored vectors are float16.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def track_embedding(prepared: Prepared, window_embeddings: np.ndarray) -> np.ndarray:
    """The track's vector (float32): the mean of its non-silent windows' embeddings (the
    manifest's ``pooling``; all windows if every one is silent). A vector that is not finite or
    does not fit float16 raises ValueError: the model is broken, the track is dead-lettered."""
    rows = np.asarray(window_embeddings, dtype=np.float64)
    keep = rows[~prepared.silent] if not np.all(prepared.silent) else rows
    vector = keep.mean(axis=0)
    if not np.all(np.isfinite(vector)) or float(np.abs(vector).max(initial=0.0)) > FLOAT16_MAX:
        raise ValueError(f"model gave an embedding that is not finite or exceeds float16 "
                         f"(max |x| {float(np.nanmax(np.abs(vector))):.3g})")
    return vector.astype(np.float32)
