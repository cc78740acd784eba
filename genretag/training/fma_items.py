"""FMA tracks as training items: ``genre_top`` (single-label) or genres with implied parents.

Multilabel targets take ``genres_all`` ∪ ``genres`` plus every ancestor, so a Post-Punk track is
also Punk and Rock even where ``genres_all`` omits them. Items keep FMA's official split and
use the artist as group.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from genretag.core.fma import FmaTrack, GenreTree, audio_path
from genretag.training.items import LabelledItem

log = logging.getLogger(__name__)


def fma_genre_ids(track: FmaTrack, genres: GenreTree, top_level_only: bool = False) -> list[int]:
    """Sorted genre ids of a track: ``genres_all`` ∪ ``genres`` plus every ancestor.

    With ``top_level_only`` just the top-level genres those belong to.
    """
    ids = set(track.genres_all) | set(track.genres)
    unknown = sorted(i for i in ids if i not in genres)
    if unknown:
        raise ValueError(f"track {track.track_id}: genre id(s) {unknown} are not in "
                         f"{genres.path or 'the genre table'}")
    if top_level_only:
        return sorted({genres.top_level(i) for i in ids})
    return genres.with_ancestors(ids)


def fma_items(
    tracks: Sequence[FmaTrack],
    audio_dir: str | Path,
    genres: GenreTree | None = None,
    multilabel: bool = False,
    top_level_only: bool = False,
) -> list[LabelledItem]:
    """FMA tracks as ``LabelledItem``s: id ``str(track_id)``, official split, artist as group.

    Single-label: ``labels == [genre_top]`` (tracks without one are left out and logged).
    Multilabel (needs ``genres``): titles of genres_all with implied parents (or top levels).
    """
    if multilabel and genres is None:
        raise ValueError("multilabel FMA items need the genre tree (load_genres)")
    items: list[LabelledItem] = []
    skipped: list[int] = []
    for t in tracks:
        if multilabel:
            assert genres is not None
            labels = [genres.title(g) for g in fma_genre_ids(t, genres, top_level_only)]
        elif t.genre_top:
            labels = [t.genre_top]
        else:
            labels = []
        if not labels:
            skipped.append(t.track_id)
            continue
        items.append(LabelledItem(
            item_id=str(t.track_id), path=audio_path(audio_dir, t.track_id), labels=labels,
            split=t.split, group=t.artist or None,
        ))
    if skipped:
        log.warning("left out %d FMA track(s) without %s (e.g. %s)", len(skipped),
                    "genres" if multilabel else "genre_top", skipped[:5])
    return items
