"""Lines of an input file or stream, each bounded in bytes before anything parses it.

Iterating a file object reads a whole line into memory first, however long: one 256 MiB line
of a catalog cost 578 MB of peak memory before any size check. :func:`bounded_lines` reads in
chunks and never holds more than ``max_bytes`` of one line; a longer line is skipped to its
end and stands in the sequence as a :class:`LineTooLong` (so line numbers stay right and the
reader can name the row).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from typing import BinaryIO

#: Longest physical line of a CSV input (an FMA tracks.csv line is ~2 KB, a labels line less).
MAX_CSV_LINE_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


class LineTooLong(ValueError):
    """A line over the cap: not read, only counted."""

    def __init__(self, number: int, max_bytes: int) -> None:
        super().__init__(f"line {number} is over {max_bytes} bytes: not read")
        self.number = number
        self.max_bytes = max_bytes


def bounded_lines(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | LineTooLong]:
    """The physical lines of ``stream`` (``\\n`` kept), each at most ``max_bytes``; a longer
    one yields a :class:`LineTooLong` in its place. Memory: ``max_bytes`` plus one chunk."""
    read = getattr(stream, "read1", None) or stream.read  # a pipe: what is there, not a chunk
    line = bytearray()
    skipping = False
    number = 0
    while data := read(_CHUNK):
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            number += 1
            piece = data[start:end + 1]
            if skipping or len(line) + len(piece) > max_bytes:
                yield LineTooLong(number, max_bytes)
            else:
                line += piece
                yield bytes(line)
            line.clear()
            skipping = False
            start = end + 1
        if not skipping:
            line += data[start:]
            if len(line) > max_bytes:
                skipping = True
                line.clear()
    if skipping:
        yield LineTooLong(number + 1, max_bytes)
    elif line:
        yield bytes(line)


class UnreadableLine(csv.Error):
    """A CSV input's line over the cap or not in its encoding (a ``csv.Error``, so the CSV
    readers report it as they report any malformed file, with the file's name)."""


def bounded_text_lines(stream: BinaryIO, max_bytes: int, what: str,
                       encoding: str = "utf-8") -> Iterator[str]:
    """:func:`bounded_lines` decoded, for ``csv.reader``; a line over the cap, or bytes not in
    ``encoding`` (checked per chunk as it is read, so a bad byte ahead is found as early as a
    text file object finds it), raise :class:`UnreadableLine` naming ``what``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for item in bounded_lines(_Checked(stream, encoding, what), max_bytes):
        if isinstance(item, LineTooLong):
            raise UnreadableLine(f"{what}: {item}")
        yield decoder.decode(item)


class _Checked:
    """A binary stream whose chunks are checked to decode as ``encoding`` as they are read."""

    def __init__(self, stream: BinaryIO, encoding: str, what: str) -> None:
        self._read = getattr(stream, "read1", None) or stream.read
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._encoding = encoding
        self._what = what

    def read1(self, size: int) -> bytes:
        data = self._read(size)
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise UnreadableLine(
                f"{self._what}: not valid {self._encoding}: {exc.reason}") from None
        return data
