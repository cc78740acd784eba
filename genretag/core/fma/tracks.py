"""Typed, pandas-free reader of FMA ``tracks.csv``.

Modelled on ``utils.load()`` of https://github.com/mdeff/fma: ``tracks.csv`` has three header
rows (top level such as ``set``/``track``, column name such as ``subset``/``genre_top``, then
``track_id`` and empty cells) and list columns hold Python literals (``"[21, 12]"``).
"""

from __future__ import annotations

import ast
import csv
import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genretag.core.fma.csvfile import (
    CsvRows,
    FmaDataError,
    FmaFormatError,
    MalformedRow,
    format_malformed,
    open_csv_rows,
)
from genretag.core.fma.layout import SPLITS, SUBSETS, subset_rank

log = logging.getLogger(__name__)

Column = tuple[str, str]
#: Columns ``load_tracks`` needs; every other column is kept as a raw string.
REQUIRED_COLUMNS: tuple[Column, ...] = (
    ("set", "subset"),
    ("set", "split"),
    ("track", "genre_top"),
    ("track", "genres"),
    ("track", "genres_all"),
)


@dataclass
class FmaTrack:
    """One row of ``tracks.csv`` with the fields training needs parsed; ``raw`` keeps them all."""

    track_id: int
    subset: str
    split: str
    genre_top: str | None
    genres: list[int]
    genres_all: list[int]
    title: str = ""
    artist: str = ""
    album: str = ""
    duration: float | None = None
    raw: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def in_subset(self, subset: str) -> bool:
        """True if the track belongs to ``subset`` (small tracks are in medium and large too)."""
        return subset_rank(self.subset) <= subset_rank(subset)


@dataclass
class Tracks:
    """Parsed ``tracks.csv``: tracks in file order, its columns, and the rows that were rejected."""

    path: Path
    columns: tuple[Column, ...]
    by_id: dict[int, FmaTrack]
    malformed: list[MalformedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[FmaTrack]:
        return iter(self.by_id.values())

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.by_id

    def __getitem__(self, track_id: int) -> FmaTrack:
        try:
            return self.by_id[track_id]
        except KeyError:
            raise KeyError(f"track {track_id} is not in {self.path}") from None

    def column_index(self, column: Column) -> int:
        """Position of ``(top, name)`` in each track's ``raw`` tuple."""
        try:
            return self.columns.index(column)
        except ValueError:
            raise KeyError(f"{self.path} has no column {column!r}") from None

    def value(self, track: FmaTrack | int, column: Column) -> str:
        """The raw string of ``column`` for a track (object or id), e.g. ``('album', 'title')``."""
        if isinstance(track, int):
            track = self[track]
        return track.raw[self.column_index(column)]

    def raise_for_malformed(self) -> None:
        """Raise ``FmaDataError`` listing the malformed rows, if there are any."""
        if self.malformed:
            raise FmaDataError(self.path, self.malformed)


def read_tracks_header(path: str | Path) -> list[tuple[str, str]]:
    """The ``(top, name)`` columns of an FMA ``tracks.csv``; ``FmaFormatError`` if not FMA's."""
    path = Path(path)
    rows = open_csv_rows(path, "FMA tracks.csv")
    try:
        return _read_tracks_header(path, rows)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FmaFormatError(f"{path}: unreadable CSV: {exc}") from exc
    finally:
        rows.close()


def iter_tracks(path: str | Path) -> Iterator[tuple[int, FmaTrack | MalformedRow]]:
    """Stream ``(line, track or malformed row)`` from ``tracks.csv`` without loading it whole.

    Raises ``FmaFormatError`` when the file is missing, unreadable, or lacks FMA's header.
    """
    path = Path(path)
    rows = open_csv_rows(path, "FMA tracks.csv")
    try:
        columns = _read_tracks_header(path, rows)
        col = {c: i for i, c in enumerate(columns)}
        memo: dict[str, str] = {}
        for line, row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            try:
                yield line, _parse_track(row, columns, col, memo)
            except ValueError as exc:
                yield line, MalformedRow(line, str(exc), row[0].strip() or None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FmaFormatError(f"{path}: unreadable CSV: {exc}") from exc
    finally:
        rows.close()


def load_tracks(path: str | Path, strict: bool = False) -> Tracks:
    """Read an FMA ``tracks.csv`` (three header rows); malformed rows go to ``Tracks.malformed``.

    With ``strict=True`` any malformed row raises ``FmaDataError`` instead.
    """
    path = Path(path)
    columns = read_tracks_header(path)
    by_id: dict[int, FmaTrack] = {}
    first_line: dict[int, int] = {}
    malformed: list[MalformedRow] = []
    for line, item in iter_tracks(path):
        if isinstance(item, MalformedRow):
            malformed.append(item)
            continue
        if item.track_id in by_id:
            malformed.append(MalformedRow(
                line, f"duplicate track_id (first on line {first_line[item.track_id]})",
                str(item.track_id)))
            continue
        by_id[item.track_id] = item
        first_line[item.track_id] = line
    tracks = Tracks(path=path, columns=columns, by_id=by_id, malformed=malformed)
    if malformed:
        log.warning("%s: %d malformed row(s) rejected:\n%s", path, len(malformed),
                    format_malformed(malformed))
    log.info("loaded %d tracks from %s", len(by_id), path)
    if strict:
        tracks.raise_for_malformed()
    return tracks


def select(
    tracks: Tracks | Iterable[FmaTrack],
    subset: str = "small",
    split: str | None = None,
) -> list[FmaTrack]:
    """Tracks of ``subset`` (inclusive: 'medium' includes 'small'), optionally of one ``split``."""
    rank = subset_rank(subset)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return [
        t for t in tracks
        if subset_rank(t.subset) <= rank and (split is None or t.split == split)
    ]



# --------------------------------------------------------------------------- internals


_HEADER_HELP = (
    "expected the three header rows of FMA tracks.csv: (1) top-level names such as "
    "',album,...,set,set,track,...', (2) column names such as ',...,split,subset,...,genre_top,"
    "genres,genres_all,...', (3) 'track_id' followed by empty cells"
)


def _read_tracks_header(path: Path, rows: CsvRows) -> tuple[Column, ...]:
    header: list[list[str]] = []
    for _ in range(3):
        try:
            header.append(next(rows)[1])
        except StopIteration:
            raise FmaFormatError(
                f"{path}: only {len(header)} line(s), not an FMA tracks.csv; {_HEADER_HELP}"
            ) from None
    top, name, third = header
    if not third or third[0].strip() != "track_id" or any(c.strip() for c in third[1:]):
        raise FmaFormatError(
            f"{path}: third line is {','.join(third)[:80]!r}, not 'track_id,,,...'; {_HEADER_HELP}")
    if not (len(top) == len(name) == len(third)):
        raise FmaFormatError(
            f"{path}: header rows have {len(top)}, {len(name)} and {len(third)} cells; they "
            f"must be equally long; {_HEADER_HELP}")
    columns = tuple((t.strip(), n.strip()) for t, n in zip(top[1:], name[1:]))
    columns = (("", "track_id"),) + columns
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise FmaFormatError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; {_HEADER_HELP}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise FmaFormatError(f"{path}: duplicate column(s) {', '.join(map(repr, dupes))}")
    return columns


def _parse_track(row: list[str], columns: tuple[Column, ...], col: dict[Column, int],
                 memo: dict[str, str] | None = None) -> FmaTrack:
    if len(row) != len(columns):
        raise ValueError(f"expected {len(columns)} fields, got {len(row)}")
    tid_text = row[0].strip()
    try:
        track_id = int(tid_text)
    except ValueError:
        raise ValueError(f"track_id {tid_text!r} is not an integer") from None
    subset = row[col[("set", "subset")]].strip()
    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r} is not one of {', '.join(SUBSETS)}")
    split = row[col[("set", "split")]].strip()
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    genre_top = row[col[("track", "genre_top")]].strip() or None
    genres = _int_list(row[col[("track", "genres")]], "genres")
    genres_all = _int_list(row[col[("track", "genres_all")]], "genres_all")

    def text(column: Column) -> str:
        i = col.get(column)
        return row[i] if i is not None else ""

    duration: float | None = None
    if text(("track", "duration")).strip():
        try:
            duration = float(text(("track", "duration")))
        except ValueError:
            raise ValueError(f"duration {text(('track', 'duration'))!r} is not a number") from None
    return FmaTrack(
        track_id=track_id, subset=subset, split=split, genre_top=genre_top,
        genres=list(genres), genres_all=list(genres_all),
        title=text(("track", "title")), artist=text(("artist", "name")),
        album=text(("album", "title")), duration=duration,
        raw=tuple(row) if memo is None else tuple(_share(c, memo) for c in row),
    )


def _share(cell: str, memo: dict[str, str]) -> str:
    """One shared object per distinct short cell (licenses, dates, '[]'): saves memory."""
    return memo.setdefault(cell, cell) if len(cell) <= 64 else cell


def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        return _parse_int_list(text.strip())
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


@functools.lru_cache(maxsize=65536)
def _parse_int_list(text: str) -> tuple[int, ...]:
    """``"[21, 12]"`` → ``(21, 12)`` via ``ast.literal_eval`` (cached: values repeat a lot)."""
    if not text:
        return ()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"{text[:60]!r} is not a list literal") from None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{text[:60]!r} is not a list of integer genre ids")
    return tuple(value)

