"""Typed, pandas-free reader of the Free Music Archive (FMA) metadata, by responsibility.

``layout`` (subset and split names, where files live), ``tracks`` (``tracks.csv``), ``genres``
(``genres.csv`` and the hierarchy), ``csvfile`` (errors and rejected rows). The public names are
re-exported here, so ``from genretag.core import fma`` and ``from genretag.core.fma import load_tracks`` work.
"""

from genretag.core.fma.csvfile import FmaDataError, FmaFormatError, MalformedRow, format_malformed
from genretag.core.fma.genres import GENRES_REQUIRED, Genre, GenreTree, load_genres
from genretag.core.fma.layout import SPLITS, SUBSETS, audio_path, metadata_dir, subset_audio_dir
from genretag.core.fma.tracks import (
    REQUIRED_COLUMNS,
    Column,
    FmaTrack,
    Tracks,
    iter_tracks,
    load_tracks,
    read_tracks_header,
    select,
)

__all__ = [
    "GENRES_REQUIRED", "REQUIRED_COLUMNS", "SPLITS", "SUBSETS", "Column", "FmaDataError",
    "FmaFormatError", "FmaTrack", "Genre", "GenreTree", "MalformedRow", "Tracks", "audio_path",
    "format_malformed", "iter_tracks", "load_genres", "load_tracks", "metadata_dir",
    "read_tracks_header", "select", "subset_audio_dir",
]
