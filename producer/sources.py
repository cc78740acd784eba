"""Catalog sources: each yields ``SourceRow``s (a TrackRef-shaped dict with where it came from)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from producer.ids import path_track_id


@dataclass(frozen=True)
class SourceRow:
    """One candidate message and its origin (file and line), for error reports."""

    data: dict[str, Any]
    origin: str
    line: int | None = None


def directory_source(root: Path, extensions: list[str]) -> Iterator[SourceRow]:
    """Every audio file under ``root`` (recursive, sorted, by extension, case-insensitive)."""
    root = Path(root).resolve()
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in wanted:
            yield SourceRow(
                data={"track_id": path_track_id(path), "uri": str(path),
                      "metadata": {"source": "directory", "relpath": str(path.relative_to(root))}},
                origin=str(path),
            )


def jsonl_source(stream: TextIO, origin: str) -> Iterator[SourceRow]:
    """TrackRef-shaped JSON objects, one per line; blank lines skipped; bad JSON kept as an error."""
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            data = {"__error__": f"invalid JSON: {exc.msg} (column {exc.colno})"}
        if not isinstance(data, dict):
            data = {"__error__": f"expected a JSON object, got {type(data).__name__}"}
        if "track_id" not in data and "uri" in data and "__error__" not in data:
            data = {**data, "track_id": path_track_id(Path(str(data["uri"])))}
        yield SourceRow(data=data, origin=origin, line=number)


def jsonl_file_source(path: Path) -> Iterator[SourceRow]:
    with open(path, encoding="utf-8") as stream:
        yield from jsonl_source(stream, str(path))


def stdin_source() -> Iterator[SourceRow]:
    """JSONL objects, or bare paths one per line, from standard input."""
    for number, line in enumerate(sys.stdin, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            yield from (
                SourceRow(r.data, "<stdin>", number) for r in jsonl_source([text], "<stdin>")
            )
        else:
            path = Path(text).resolve()
            yield SourceRow({"track_id": path_track_id(path), "uri": str(path)}, "<stdin>", number)
