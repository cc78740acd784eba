"""Catalog sources: each yields ``SourceRow``s (a TrackRef-shaped dict with where it came from).

Sources stream: a row is read, yielded and forgotten, so a catalog of any size fits in memory.
A ``Source`` can be read more than once (``--strict`` validates in a first pass, then sends).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from genretag.core.audio.formats import normalise_extensions
from genretag.core.trackids import path_track_id, uri_track_id


@dataclass(frozen=True)
class SourceRow:
    """One candidate message and its origin (file and line), for error reports.

    ``error``: the source could not read the row (bad JSON, malformed CSV row); ``skip``: the
    source knows the row must not be sent, and why (a reason counted in the summary).
    """

    data: dict[str, Any]
    origin: str
    line: int | None = None
    error: str | None = None
    skip: str | None = None

    @property
    def where(self) -> str:
        """``file:line`` (or just the origin when the row has no line)."""
        return f"{self.origin}:{self.line}" if self.line is not None else self.origin


@dataclass(frozen=True)
class Source:
    """A named catalog that can be iterated again (each iteration re-opens it) unless one-shot."""

    name: str
    open: Callable[[], Iterable[SourceRow]]
    rereadable: bool = True

    def __iter__(self) -> Iterator[SourceRow]:
        return iter(self.open())


def directory_source(root: Path, extensions: Iterable[str]) -> Iterator[SourceRow]:
    """Every audio file under ``root`` (recursive, sorted, extensions case-insensitive)."""
    root = Path(root).resolve()
    wanted = normalise_extensions(extensions)
    for path in _walk_sorted(root):
        if path.suffix.lower() in wanted:
            if not _is_utf8(str(path)):  # a name the catalog cannot carry: report it, go on
                shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                yield SourceRow({}, shown, error=f"file name is not valid UTF-8: {shown}")
                continue
            yield SourceRow(
                data={"track_id": path_track_id(path), "uri": str(path),
                      "metadata": {"source": "directory", "relpath": str(path.relative_to(root))}},
                origin=str(path),
            )


def file_source(path: Path) -> Iterator[SourceRow]:
    """One audio file, as the directory source would list it (same id, absolute uri)."""
    path = Path(path).resolve()
    yield SourceRow(
        data={"track_id": path_track_id(path), "uri": str(path),
              "metadata": {"source": "file", "relpath": path.name}},
        origin=str(path),
    )


def _is_utf8(text: str) -> bool:
    """False for a name decoded with surrogate escapes (its bytes are not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk_sorted(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` depth first, names sorted; holds one folder listing at a time."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk_sorted(entry)
        elif entry.is_file():
            yield entry


def _row_from_json(text: str, origin: str, line: int) -> SourceRow:
    """One JSONL line → a row; the id is derived from ``uri`` when the object has none."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return SourceRow({}, origin, line, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(data, dict):
        return SourceRow({}, origin, line,
                         error=f"expected a JSON object, got {type(data).__name__}")
    if "track_id" not in data and isinstance(data.get("uri"), str) and data["uri"]:
        data = {**data, "track_id": uri_track_id(data["uri"])}
    return SourceRow(data, origin, line)


def jsonl_source(stream: Iterable[str], origin: str) -> Iterator[SourceRow]:
    """TrackRef-shaped JSON objects, one per line; blank lines skipped; bad JSON as an error."""
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if text:
            yield _row_from_json(text, origin, number)


def jsonl_file_source(path: Path) -> Iterator[SourceRow]:
    """A JSONL file, opened when iteration starts and closed when it ends."""
    with open(path, encoding="utf-8") as stream:
        yield from jsonl_source(stream, str(path))


def _lines(stream: TextIO | None) -> Iterator[str | None]:
    """Lines of ``stream`` (default: standard input's bytes, decoded line by line, so one line
    that is not UTF-8 is None instead of ending the whole read)."""
    if stream is not None:
        yield from stream
        return
    for raw in sys.stdin.buffer:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield None


def stdin_source(stream: TextIO | None = None) -> Iterator[SourceRow]:
    """JSONL objects, or bare paths one per line, from standard input."""
    for number, line in enumerate(_lines(stream), start=1):
        if line is None:
            yield SourceRow({}, "<stdin>", number, error="line is not valid UTF-8")
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            yield _row_from_json(text, "<stdin>", number)
        else:
            path = Path(text).resolve()
            if not _is_utf8(str(path)):
                yield SourceRow({}, "<stdin>", number, error="path is not valid UTF-8")
                continue
            yield SourceRow({"track_id": path_track_id(path), "uri": str(path)}, "<stdin>", number)
