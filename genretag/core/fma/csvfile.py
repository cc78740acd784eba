"""CSV plumbing shared by the FMA readers: errors, rejected rows, and a line-numbered row reader.

Malformed data rows are collected with their line numbers and returned, never printed or dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genretag.core.errors import FatalError
from genretag.core.lines import MAX_CSV_LINE_BYTES, bounded_text_lines

CSV_FIELD_LIMIT = 1 << 26  # artist bios can be long; the csv default (128 KiB) is too small
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


class CsvRows:
    """Iterator of ``(start_line, row)`` over a CSV file, closing the file when done."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        # physical lines bounded before csv sees them (a huge line is refused, not held)
        self._reader = csv.reader(bounded_text_lines(self._file, MAX_CSV_LINE_BYTES, str(path)))
        self._last_line = 0

    def __iter__(self) -> CsvRows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        start = self._last_line + 1
        row = next(self._reader)
        self._last_line = self._reader.line_num
        return start, row

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()


def open_csv_rows(path: Path, what: str) -> CsvRows:
    """Open an FMA CSV for reading; a missing or unopenable file is an ``FmaFormatError``."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    if not path.is_file():
        raise FmaFormatError(
            f"{path}: {what} not found (download the metadata with `genretag fma download`)")
    try:
        return CsvRows(path)
    except OSError as exc:
        raise FmaFormatError(f"{path}: cannot open {what}: {exc}") from exc

