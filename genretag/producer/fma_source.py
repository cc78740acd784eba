"""FMA ``tracks.csv`` as a catalog source: one row per track of a subset (and split), streamed.

Parsing is ``core.fma``'s (the three-row header, list literals, subsets nesting small ⊂
medium ⊂ large); this module only walks the file row by row instead of loading it whole, and
turns each track into a TrackRef-shaped row whose audio path is FMA's ``000/000002.mp3``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from genretag.core.logs import get_logger
from genretag.core.trackids import fma_track_id
from genretag.producer.sources import SourceRow
from genretag.core import fma

log = get_logger(__name__)

SUBSETS = fma.SUBSETS
SPLITS = fma.SPLITS


def default_audio_dir(tracks_csv: Path, subset: str) -> Path | None:
    """``<fma>/fma_<subset>`` when ``tracks_csv`` sits in ``<fma>/fma_metadata/``, else None."""
    tracks_csv = Path(tracks_csv)
    if tracks_csv.parent.name != "fma_metadata":
        return None
    return fma.subset_audio_dir(tracks_csv.parent.parent, subset)


def check_header(tracks_csv: Path) -> None:
    """Raise ``FmaFormatError`` now if the file is missing or lacks FMA's header (fail fast)."""
    fma.read_tracks_header(tracks_csv)


def fma_source(
    tracks_csv: Path, audio_dir: Path, subset: str = "small", split: str | None = None
) -> Iterator[SourceRow]:
    """Tracks of ``subset`` (inclusive) and ``split`` as rows; malformed CSV rows as errors.

    Raises ``core.fma.FmaFormatError`` when the file is missing or its header is not FMA's.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    tracks_csv = Path(tracks_csv)
    audio_dir = Path(audio_dir).resolve()
    origin = str(tracks_csv)
    for line, track in fma.iter_tracks(tracks_csv):
        if isinstance(track, fma.MalformedRow):
            yield SourceRow({}, origin, line, error=track.reason)
            continue
        if not track.in_subset(subset) or (split is not None and track.split != split):
            continue
        yield SourceRow(
            data={
                "track_id": fma_track_id(track.track_id),
                "uri": str(fma.audio_path(audio_dir, track.track_id)),
                "metadata": {
                    "source": "fma", "genre_top": track.genre_top, "title": track.title,
                    "artist": track.artist, "subset": track.subset, "split": track.split,
                },
            },
            origin=origin, line=line,
        )
