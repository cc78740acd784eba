"""The vector index behind similarity search: one interface, picked by ``index_uri``.

* a folder ending in ``.usearch`` (the default): the embedded engine, usearch HNSW files in this
  process (no server; one process at a time);
* ``http(s)://HOST:19530``: a Milvus standalone server or cluster (deploy/), through pymilvus;
* a ``.db`` file: milvus-lite, the same pymilvus calls as a server, in this process.

The choice and the numbers behind it are in docs/similarity.md (``bench/similarity.py``).
Every backend keeps one collection per embedding space (vectors of different spaces are not
comparable), rows keyed by track id with the track's genres and model version, and the sync
mark (:mod:`genretag.core.similarity.sync`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from genretag.core.errors import FatalError
from genretag.core.settings import IndexSection

#: Genres kept per track (the most a filter can match on).
MAX_GENRES = 64


class VectorIndexError(FatalError):
    """The index cannot be opened (locked by another process, unreachable) or refused a call."""


@dataclass(frozen=True)
class IndexedTrack:
    """One row of a space's collection."""

    track_id: str
    vector: np.ndarray
    genres: tuple[str, ...]
    model_version: str


@dataclass(frozen=True)
class Neighbour:
    """A search hit: a track and its cosine similarity to the query (1 = same direction)."""

    track_id: str
    similarity: float
    genres: tuple[str, ...] = ()
    model_version: str = ""


def quote(text: str) -> str:
    """A string literal of Milvus's filter expressions (backslash and quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def collection_name(prefix: str, space: str) -> str:
    """The collection of ``space``: letters, digits and underscores (Milvus names)."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', space)}"


class VectorIndex(Protocol):
    """What sync and search need of a backend."""

    def collection(self, space: str) -> str: ...

    def spaces(self) -> list[str]:
        """Names of the collections that hold vectors."""
        ...

    def upsert(self, space: str, rows: Sequence[IndexedTrack]) -> None: ...

    def delete(self, collection: str, track_ids: Sequence[str]) -> int: ...

    def drop_all(self) -> None: ...

    def mark(self) -> int: ...

    def set_mark(self, seq: int) -> None: ...

    def owner(self) -> str:
        """Which store (Redis URL and key prefix) the index mirrors ("" before its first sync)."""
        ...

    def set_owner(self, store: str) -> None: ...

    def count(self, collection: str) -> int: ...

    def search(self, space: str, vector: np.ndarray, limit: int, genre: str | None = None,
               exclude: Sequence[str] = ()) -> list[Neighbour]: ...

    def flush(self) -> None:
        """Make every change so far durable (the mark last)."""
        ...

    def close(self) -> None: ...


def open_index(section: IndexSection) -> VectorIndex:
    """The backend of ``section.uri``."""
    if section.engine == "usearch":
        from genretag.core.similarity.embedded import UsearchIndex  # noqa: PLC0415

        return UsearchIndex(section)
    from genretag.core.similarity.milvus import MilvusIndex  # noqa: PLC0415

    return MilvusIndex(section)
