"""Typed, pandas-free reader for the Free Music Archive (FMA) metadata.

Modelled on ``utils.load()`` of https://github.com/mdeff/fma: ``tracks.csv`` has three header
rows (top level such as ``set``/``track``, column name such as ``subset``/``genre_top``, then
``track_id`` and empty cells), list columns hold Python literals (``"[21, 12]"``), and subsets
nest: small ⊂ medium ⊂ large. Malformed data rows are collected with their line numbers and
returned, never printed or silently dropped.
"""

from __future__ import annotations

import ast
import csv
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from core.errors import FatalError

log = logging.getLogger(__name__)

#: Subsets from smallest to largest; each contains the ones before it.
SUBSETS: tuple[str, ...] = ("small", "medium", "large")
#: Official split names, as written in ``('set', 'split')``.
SPLITS: tuple[str, ...] = ("training", "validation", "test")

Column = tuple[str, str]
#: Columns ``load_tracks`` needs; every other column is kept as a raw string.
REQUIRED_COLUMNS: tuple[Column, ...] = (
    ("set", "subset"),
    ("set", "split"),
    ("track", "genre_top"),
    ("track", "genres"),
    ("track", "genres_all"),
)
#: Columns of ``genres.csv`` ``load_genres`` needs (``#tracks`` and ``top_level`` are optional).
GENRES_REQUIRED: tuple[str, ...] = ("genre_id", "parent", "title")

_SUBSET_RANK = {name: rank for rank, name in enumerate(SUBSETS)}
_CSV_FIELD_LIMIT = 1 << 26  # artist bios can be long; the csv default (128 KiB) is too small
_MAX_LISTED = 20


class FmaFormatError(FatalError, ValueError):
    """A metadata file is missing or does not have the expected header / structure."""


class FmaDataError(FatalError, ValueError):
    """A metadata file has malformed data rows (raised only when asked to be strict)."""

    def __init__(self, path: Path, malformed: Sequence[MalformedRow]) -> None:
        self.path = path
        self.malformed = list(malformed)
        super().__init__(f"{path}: {len(self.malformed)} malformed row(s):\n"
                         + format_malformed(self.malformed))


@dataclass(frozen=True)
class MalformedRow:
    """One rejected data row: the 1-based line it starts on, its id if readable, and why."""

    line: int
    reason: str
    track_id: str | None = None

    def __str__(self) -> str:
        ident = f" (id {self.track_id})" if self.track_id else ""
        return f"line {self.line}{ident}: {self.reason}"


def format_malformed(rows: Sequence[MalformedRow], limit: int = _MAX_LISTED) -> str:
    """Human-readable list of malformed rows (the first ``limit``, then a count)."""
    lines = [f"  {row}" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more")
    return "\n".join(lines)


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
        return _SUBSET_RANK[self.subset] <= _subset_rank(subset)


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
    rows = _open_csv_rows(path, "FMA tracks.csv")
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
    rows = _open_csv_rows(path, "FMA tracks.csv")
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
    rank = _subset_rank(subset)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return [
        t for t in tracks
        if _SUBSET_RANK[t.subset] <= rank and (split is None or t.split == split)
    ]


def audio_path(audio_dir: str | Path, track_id: int) -> Path:
    """Where FMA stores a track's mp3: three-digit folder of the zero-padded id, then the id.

    >>> audio_path("fma_small", 2).as_posix()
    'fma_small/000/000002.mp3'
    >>> audio_path("fma_large", 155320).as_posix()
    'fma_large/155/155320.mp3'
    """
    tid = f"{int(track_id):06d}"
    return Path(audio_dir) / tid[:3] / f"{tid}.mp3"


def metadata_dir(fma_dir: str | Path) -> Path:
    """``fma_metadata`` inside a directory holding the extracted FMA archives."""
    return Path(fma_dir) / "fma_metadata"


def subset_audio_dir(fma_dir: str | Path, subset: str) -> Path:
    """The extracted audio folder of ``subset`` (``fma_small`` etc.) inside ``fma_dir``."""
    _subset_rank(subset)
    return Path(fma_dir) / f"fma_{subset}"


@dataclass(frozen=True)
class Genre:
    """One row of ``genres.csv``; ``parent`` is None for a top-level genre."""

    genre_id: int
    title: str
    parent: int | None
    top_level: int | None = None
    n_tracks: int | None = None


class GenreTree:
    """The FMA genre hierarchy: titles, parent links, ancestors and top-level genres."""

    def __init__(self, genres: Iterable[Genre], path: Path | None = None,
                 malformed: Sequence[MalformedRow] = ()) -> None:
        self.path = path
        self.genres: dict[int, Genre] = {}
        for g in genres:
            if g.genre_id in self.genres:
                raise FmaFormatError(f"{self._where()}duplicate genre_id {g.genre_id}")
            self.genres[g.genre_id] = g
        self.malformed: list[MalformedRow] = list(malformed)
        self._children: dict[int, list[int]] = {gid: [] for gid in self.genres}
        for g in self.genres.values():
            if g.parent is not None:
                if g.parent not in self.genres:
                    raise FmaFormatError(
                        f"{self._where()}genre {g.genre_id} ({g.title}) has parent {g.parent}, "
                        "which is not in the table")
                self._children[g.parent].append(g.genre_id)
        self._ancestors: dict[int, tuple[int, ...]] = {}
        for gid in self.genres:
            self._ancestors[gid] = self._walk_up(gid)

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""

    def _walk_up(self, genre_id: int) -> tuple[int, ...]:
        chain: list[int] = []
        seen = {genre_id}
        parent = self.genres[genre_id].parent
        while parent is not None:
            if parent in seen:
                raise FmaFormatError(
                    f"{self._where()}genre hierarchy has a cycle through genre {genre_id}")
            seen.add(parent)
            chain.append(parent)
            parent = self.genres[parent].parent
        return tuple(chain)

    def __len__(self) -> int:
        return len(self.genres)

    def __iter__(self) -> Iterator[Genre]:
        return iter(self.genres.values())

    def __contains__(self, genre_id: object) -> bool:
        return genre_id in self.genres

    def __getitem__(self, genre_id: int) -> Genre:
        try:
            return self.genres[genre_id]
        except KeyError:
            raise KeyError(f"{self._where()}unknown genre id {genre_id}") from None

    def title(self, genre_id: int) -> str:
        """Title of a genre, e.g. ``21`` → ``'Hip-Hop'``."""
        return self[genre_id].title

    def parent(self, genre_id: int) -> int | None:
        """Parent genre id, or None for a top-level genre."""
        return self[genre_id].parent

    def children(self, genre_id: int) -> list[int]:
        """Direct children of a genre, in file order."""
        self[genre_id]
        return list(self._children[genre_id])

    def ancestors(self, genre_id: int) -> list[int]:
        """Parent, grandparent, ... up to the top-level genre (empty for a top-level genre)."""
        self[genre_id]
        return list(self._ancestors[genre_id])

    def top_level(self, genre_id: int) -> int:
        """The top-level genre (root of the hierarchy) a genre belongs to."""
        chain = self.ancestors(genre_id)
        return chain[-1] if chain else genre_id

    def top_levels(self) -> list[int]:
        """Ids of all top-level genres, in file order."""
        return [g.genre_id for g in self.genres.values() if g.parent is None]

    def with_ancestors(self, genre_ids: Iterable[int]) -> list[int]:
        """Sorted ids of ``genre_ids`` plus all their ancestors (parents implied by children)."""
        out: set[int] = set()
        for gid in genre_ids:
            out.add(gid)
            out.update(self.ancestors(gid))
        return sorted(out)

    def id_of(self, title: str) -> int:
        """Genre id of a title (titles are unique in FMA)."""
        for g in self.genres.values():
            if g.title == title:
                return g.genre_id
        raise KeyError(f"{self._where()}no genre titled {title!r}")


def load_genres(path: str | Path) -> GenreTree:
    """Read FMA ``genres.csv`` (genre_id,#tracks,parent,title,top_level) into a ``GenreTree``."""
    path = Path(path)
    rows = _open_csv_rows(path, "FMA genres.csv")
    expected = "genre_id,#tracks,parent,title,top_level"
    try:
        try:
            _, header = next(rows)
        except StopIteration:
            raise FmaFormatError(f"{path}: empty file; expected header {expected!r}") from None
        names = [h.strip() for h in header]
        missing = [c for c in GENRES_REQUIRED if c not in names]
        if missing:
            raise FmaFormatError(
                f"{path}: not an FMA genres.csv: header {','.join(names)!r} lacks "
                f"{', '.join(missing)}; expected {expected!r}")
        idx = {name: i for i, name in enumerate(names)}
        genres: list[Genre] = []
        malformed: list[MalformedRow] = []
        lines: dict[int, int] = {}
        for line, row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                genre = _parse_genre(row, idx, len(names))
                if genre.genre_id in lines:
                    raise ValueError(f"duplicate genre_id (first on line {lines[genre.genre_id]})")
            except ValueError as exc:
                malformed.append(MalformedRow(line, str(exc), row[0].strip() or None))
                continue
            lines[genre.genre_id] = line
            genres.append(genre)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FmaFormatError(f"{path}: unreadable CSV: {exc}") from exc
    finally:
        rows.close()
    tree = GenreTree(genres, path=path, malformed=malformed)
    for g in tree:
        if g.top_level is not None and g.top_level != tree.top_level(g.genre_id):
            tree.malformed.append(MalformedRow(
                lines[g.genre_id], f"top_level column says {g.top_level}, parents lead to "
                f"{tree.top_level(g.genre_id)}", str(g.genre_id)))
    if tree.malformed:
        log.warning("%s: %d malformed row(s):\n%s", path, len(tree.malformed),
                    format_malformed(tree.malformed))
    return tree


# --------------------------------------------------------------------------- internals


class _Rows:
    """Iterator of ``(start_line, row)`` over a CSV file, closing the file when done."""

    def __init__(self, path: Path) -> None:
        self._file = path.open(newline="", encoding="utf-8")
        self._reader = csv.reader(self._file)
        self._last_line = 0

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        start = self._last_line + 1
        row = next(self._reader)
        self._last_line = self._reader.line_num
        return start, row

    def close(self) -> None:
        self._file.close()


def _open_csv_rows(path: Path, what: str) -> _Rows:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    if not path.is_file():
        raise FmaFormatError(
            f"{path}: {what} not found (download the metadata with `genretag fma download`)")
    try:
        return _Rows(path)
    except OSError as exc:
        raise FmaFormatError(f"{path}: cannot open {what}: {exc}") from exc


_HEADER_HELP = (
    "expected the three header rows of FMA tracks.csv: (1) top-level names such as "
    "',album,...,set,set,track,...', (2) column names such as ',...,split,subset,...,genre_top,"
    "genres,genres_all,...', (3) 'track_id' followed by empty cells"
)


def _read_tracks_header(path: Path, rows: _Rows) -> tuple[Column, ...]:
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
    if subset not in _SUBSET_RANK:
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


def _parse_genre(row: list[str], idx: dict[str, int], width: int) -> Genre:
    if len(row) != width:
        raise ValueError(f"expected {width} fields, got {len(row)}")

    def integer(name: str, optional: bool = False) -> int | None:
        if name not in idx:
            return None
        text = row[idx[name]].strip()
        if optional and not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not an integer") from None

    genre_id = integer("genre_id")
    parent = integer("parent")
    title = row[idx["title"]].strip()
    if not title:
        raise ValueError("empty title")
    assert genre_id is not None
    return Genre(
        genre_id=genre_id, title=title, parent=parent or None,
        top_level=integer("top_level", optional=True), n_tracks=integer("#tracks", optional=True),
    )


def _subset_rank(subset: str) -> int:
    try:
        return _SUBSET_RANK[subset]
    except KeyError:
        raise ValueError(
            f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}") from None
