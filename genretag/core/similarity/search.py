""""More like this": the nearest stored tracks of a track or a vector (the Python API of
``genretag similar``; torch-free, so the light client can import it).

A stored track is looked up in the tag store (its float16 vector and space), then searched in
its space's collection, itself left out. With the embedded engine the index is brought up to
date from the store first (``sync``: cheap when nothing changed), so a fresh ``make demo``
answers without an index step; with a server the sync runs as its own job (``genretag index
sync --follow``, deploy/) unless asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genretag.core.errors import GenretagError
from genretag.core.settings import IndexSection, RedisSection
from genretag.core.similarity.engine import Neighbour, open_index
from genretag.core.similarity.sync import IndexSync, SyncReport
from genretag.core.store import EmbeddingReader, KeyLayout, TagReader, connect


class UnknownTrack(GenretagError):
    """The track has no stored vector (not tagged yet, or by a model without an embedding)."""

    exit_code = 1


class SimilaritySearch:
    """Nearest tracks from the index of ``index``, vectors and tags from ``redis``'s store."""

    def __init__(self, redis: RedisSection, index: IndexSection) -> None:
        keys = KeyLayout(redis.key_prefix)
        self.vectors = EmbeddingReader(connect(redis, binary=True), keys)
        self.tags = TagReader(connect(redis, encoding_errors="backslashreplace"), keys)
        self.index_section = index
        self.index = open_index(index)
        self.syncer = IndexSync(self.index, self.vectors, self.tags, index.sync_batch,
                                store=f"{redis.url} {redis.key_prefix}")

    def sync(self) -> SyncReport:
        """Upsert what the store wrote since the index's mark."""
        return self.syncer.sync()

    def similar_to_track(self, track_id: str, limit: int = 10, genre: str | None = None,
                         sync: bool | None = None) -> list[Neighbour]:
        """The ``limit`` tracks nearest to stored track ``track_id`` (of ``genre`` if given).
        ``sync`` (default: with the embedded engine) brings the index up to date first."""
        stored = self.vectors.get(track_id)
        if stored is None:
            raise UnknownTrack(
                f"track {track_id!r} has no stored embedding: it is not tagged yet, or its "
                "model has none (needs a schema-2 artifact and GENRETAG_SINKS=tags,embeddings)")
        if self.index_section.embedded if sync is None else sync:
            self.sync()
        return self.index.search(stored.space, stored.vector, limit, genre, exclude=[track_id])

    def similar_to_vector(self, vector: np.ndarray, space: str, limit: int = 10,
                          genre: str | None = None, exclude: Sequence[str] = (),
                          sync: bool | None = None) -> list[Neighbour]:
        """The ``limit`` tracks of ``space`` nearest to ``vector`` (a file embedded now)."""
        if self.index_section.embedded if sync is None else sync:
            self.sync()
        return self.index.search(space, vector, limit, genre, exclude=exclude)

    def close(self) -> None:
        self.index.close()
        self.vectors.client.close()
        self.tags.client.close()
