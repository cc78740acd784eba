"""FMA ``genres.csv`` and the genre hierarchy: titles, parents, ancestors, top-level genres."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from genretag.core.fma.csvfile import FmaFormatError, MalformedRow, format_malformed, open_csv_rows

log = logging.getLogger(__name__)

#: Columns of ``genres.csv`` ``load_genres`` needs (``#tracks`` and ``top_level`` are optional).
GENRES_REQUIRED: tuple[str, ...] = ("genre_id", "parent", "title")


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
    rows = open_csv_rows(path, "FMA genres.csv")
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
