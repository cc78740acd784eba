"""Catalog sources: each yields ``SourceRow``s (a TrackRef-shaped dict with where it came from).

Sources stream: a row is read, yielded and forgotten, so a catalog of any size fits in memory;
a line is read in bounded chunks (:func:`genretag.core.lines.bounded_lines`), so one huge line
is skipped and named instead of held (cap: ``LINE_FACTOR`` × the message cap).
A ``Source`` can be read more than once (``--strict`` validates in a first pass, then sends).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from genretag.core.audio.formats import normalise_extensions
from genretag.core.lines import LineTooLong, bounded_lines
from genretag.core.trackids import path_track_id, uri_track_id


#: Longest line read, as a multiple of the message cap: JSON escapes and spacing can make a row's
#: line longer than the message it becomes, but never by this much for a row worth sending.
LINE_FACTOR = 8


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


#: Why a hidden file is not sent (``produce`` counts it under this reason in its summary).
HIDDEN = "hidden"


def is_hidden(name: str) -> bool:
    """A dot name: a hidden file or folder, macOS AppleDouble ``._song.mp3`` metadata included
    (not audio, whatever its extension says)."""
    return name.startswith(".")


def audio_under(root: Path, extensions: Iterable[str], include_hidden: bool = False
                ) -> Iterator[tuple[Path, bool]]:
    """``(path, hidden)`` of every file under ``root`` with one of ``extensions`` (recursive,
    sorted, case-insensitive). Hidden folders are not entered and hidden files come with
    ``hidden=True``, unless ``include_hidden``: then everything is listed as not hidden.
    Shared by ``produce DIR`` and ``tag DIR``, so both list the same files."""
    wanted = normalise_extensions(extensions)
    for path in _walk_sorted(Path(root), include_hidden):
        if path.suffix.lower() in wanted:
            yield path, not include_hidden and is_hidden(path.name)


def directory_source(root: Path, extensions: Iterable[str],
                     include_hidden: bool = False) -> Iterator[SourceRow]:
    """Every audio file under ``root`` (recursive, sorted, extensions case-insensitive); a
    hidden one is a skipped row (reason ``hidden``) unless ``include_hidden``."""
    root = Path(root).resolve()
    for path, hidden in audio_under(root, extensions, include_hidden):
        if not _is_utf8(str(path)):  # a name the catalog cannot carry: report it, go on
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            yield SourceRow({}, shown, error=f"file name is not valid UTF-8: {shown}")
            continue
        if hidden:
            yield SourceRow({}, str(path), skip=HIDDEN)
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


def _walk_sorted(folder: Path, include_hidden: bool) -> Iterator[Path]:
    """Files under ``folder`` depth first, names sorted; holds one folder listing at a time.
    Hidden folders are entered only with ``include_hidden``."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            if include_hidden or not is_hidden(entry.name):
                yield from _walk_sorted(entry, include_hidden)
        elif entry.is_file():
            yield entry


def _row_from_json(text: str, origin: str, line: int) -> SourceRow:
    """One JSONL line → a row; the id is derived from ``uri`` when the object has none."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return SourceRow({}, origin, line, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
    if isinstance(data, list):
        return SourceRow({}, origin, line, error="expected a JSON object, got list: give one "
                         "JSON object per line (jq -c '.[]' catalog.json > catalog.jsonl)")
    if not isinstance(data, dict):
        return SourceRow({}, origin, line,
                         error=f"expected a JSON object, got {type(data).__name__}")
    if "track_id" not in data and isinstance(data.get("uri"), str) and data["uri"]:
        data = {**data, "track_id": uri_track_id(data["uri"])}
    return SourceRow(data, origin, line)


def _too_long(item: LineTooLong) -> str:
    return (f"line is over {item.max_bytes} bytes ({LINE_FACTOR} x max_message_bytes): not "
            "read (a whole catalog on one line? give one JSON object per line)")


def jsonl_file_source(path: Path, max_line_bytes: int) -> Iterator[SourceRow]:
    """A JSONL file, opened when iteration starts and closed when it ends; lines bounded."""
    with open(path, "rb") as stream:
        for number, line in enumerate(_lines(stream, max_line_bytes), start=1):
            if isinstance(line, str):
                if line.strip():
                    yield _row_from_json(line.strip(), str(path), number)
                continue
            error = _too_long(line) if isinstance(line, LineTooLong) else "not valid UTF-8"
            yield SourceRow({}, str(path), number, error=error)


def _lines(stream: BinaryIO | TextIO | None,
           max_line_bytes: int) -> Iterator[str | LineTooLong | None]:
    """Lines of ``stream`` (default: standard input's bytes), read in bounded chunks and
    decoded line by line: one line that is not UTF-8 is None, one over the cap a
    LineTooLong, instead of ending (or swamping) the whole read."""
    if stream is None:
        stream = sys.stdin.buffer
    if isinstance(stream, io.TextIOBase):  # already text (tests, callers with a str stream)
        yield from stream
        return
    for raw in bounded_lines(stream, max_line_bytes):
        if isinstance(raw, LineTooLong):
            yield raw
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield None


def stdin_source(stream: BinaryIO | TextIO | None = None,
                 max_line_bytes: int = 1 << 20) -> Iterator[SourceRow]:
    """JSONL objects, or bare paths one per line, from standard input."""
    for number, line in enumerate(_lines(stream, max_line_bytes), start=1):
        if line is None:
            yield SourceRow({}, "<stdin>", number, error="line is not valid UTF-8")
            continue
        if isinstance(line, LineTooLong):
            yield SourceRow({}, "<stdin>", number, error=_too_long(line))
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
