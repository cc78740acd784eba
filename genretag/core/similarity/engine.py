"""The vector engine behind similarity search: Milvus through the ``pymilvus`` client.

The same :class:`VectorIndex` code runs embedded (``index_uri`` a ``.db`` file: milvus-lite in
this process, no server; the file is locked by one process at a time) and against a Milvus
standalone server or cluster (``http(s)://``). One collection per embedding space (vectors of
different spaces are not comparable), named from the space; each row is a track: its id, its
vector (cosine), its genre labels (for ``--genre``) and the model version. An HNSW index
(``hnsw_m``, ``ef_construction``; ``search_ef`` at query time) was chosen on the numbers of
``bench/similarity.py`` (docs/similarity.md). A small meta collection keeps the sync mark.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genretag.core.errors import FatalError
from genretag.core.settings import IndexSection

#: Longest track id (the TrackRef contract allows 128 characters) and label the rows hold.
MAX_ID, MAX_LABEL, MAX_GENRES = 128, 256, 64
#: Collection properties key of the sync mark (sequence number of the last synced write).
MARK = "genretag.synced_seq"


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


class VectorIndex:
    """The similarity index of one ``index`` section (embedded file or server)."""

    def __init__(self, section: IndexSection) -> None:
        from pymilvus import MilvusClient  # noqa: PLC0415 - heavy, only for index commands

        self.section = section
        uri = section.uri
        if section.embedded:
            path = Path(uri).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        token = section.token.get_secret_value() if section.token else ""
        try:
            self.client = MilvusClient(uri=uri, token=token)
        except Exception as exc:  # noqa: BLE001 - pymilvus/milvus-lite raise many types
            raise VectorIndexError(self._why(exc)) from exc
        self._loaded: set[str] = set()

    def _why(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())[:300]
        if "lock" in text.lower() and self.section.embedded:
            return (f"the embedded index {self.section.uri} is open in another process ({text}); "
                    "stop it, or serve the index from Milvus (GENRETAG_INDEX_URI=http://...)")
        return f"vector index {self.section.uri}: {type(exc).__name__}: {text}"

    # -- names --------------------------------------------------------------------------------
    def collection(self, space: str) -> str:
        """The collection of ``space`` (Milvus names: letters, digits, underscores)."""
        return f"{self.section.collection_prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', space)}"

    @property
    def meta(self) -> str:
        return f"{self.section.collection_prefix}__meta"

    def spaces(self) -> list[str]:
        """Collections of this prefix that hold vectors (their names, not the spaces)."""
        start = f"{self.section.collection_prefix}_"
        return sorted(c for c in self.client.list_collections()
                      if c.startswith(start) and c != self.meta)

    # -- schema -------------------------------------------------------------------------------
    def ensure(self, space: str, dim: int) -> str:
        """The space's collection, created (HNSW, cosine) if missing; loaded for search."""
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        name = self.collection(space)
        if not self.client.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                description=f"genretag vectors of {space}")
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("genres", DataType.ARRAY, element_type=DataType.VARCHAR,
                             max_capacity=MAX_GENRES, max_length=MAX_LABEL)
            schema.add_field("model_version", DataType.VARCHAR, max_length=MAX_LABEL)
            params = self.client.prepare_index_params()
            params.add_index("vector", index_type="HNSW", metric_type="COSINE",
                             params={"M": self.section.hnsw_m,
                                     "efConstruction": self.section.ef_construction})
            self.client.create_collection(name, schema=schema, index_params=params)
        self._load(name)
        return name

    def _load(self, name: str) -> None:
        if name not in self._loaded:
            self.client.load_collection(name)
            self._loaded.add(name)

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, space: str, rows: Sequence[IndexedTrack]) -> None:
        if not rows:
            return
        name = self.ensure(space, int(len(rows[0].vector)))
        self.client.upsert(name, [
            {"id": r.track_id, "vector": np.asarray(r.vector, dtype=np.float32).tolist(),
             "genres": list(r.genres)[:MAX_GENRES], "model_version": r.model_version}
            for r in rows])

    def delete(self, collection: str, track_ids: Sequence[str]) -> int:
        """Remove tracks from a collection (a track whose vector moved to another space);
        returns how many rows went."""
        if not track_ids:
            return 0
        self._load(collection)
        result = self.client.delete(collection, ids=list(track_ids))
        return int(result.get("delete_count", 0)) if isinstance(result, dict) else 0

    def drop_all(self) -> None:
        """Every collection of this prefix, the sync mark included (a rebuild starts here)."""
        for name in [*self.spaces(), self.meta]:
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._loaded.clear()

    # -- sync mark ----------------------------------------------------------------------------
    def mark(self) -> int:
        """Sequence number of the last store write the index holds (0: none)."""
        if not self.client.has_collection(self.meta):
            return 0
        props = self.client.describe_collection(self.meta).get("properties") or {}
        return int(props.get(MARK, 0))

    def set_mark(self, seq: int) -> None:
        if not self.client.has_collection(self.meta):
            self.client.create_collection(self.meta, dimension=2)
        self.client.alter_collection_properties(self.meta, properties={MARK: str(int(seq))})

    # -- reads --------------------------------------------------------------------------------
    def count(self, collection: str) -> int:
        return int(self.client.get_collection_stats(collection).get("row_count", 0))

    def search(self, space: str, vector: np.ndarray, limit: int, genre: str | None = None,
               exclude: Sequence[str] = ()) -> list[Neighbour]:
        """The ``limit`` nearest tracks of ``space`` (cosine), of ``genre`` if given, without
        the ids in ``exclude`` (e.g. the query track itself); [] when the space has no index."""
        name = self.collection(space)
        if not self.client.has_collection(name):
            return []
        self._load(name)
        want = limit + len(exclude)
        hits: list[Any] = self.client.search(
            name, [np.asarray(vector, dtype=np.float32).tolist()], limit=want,
            filter=f"array_contains(genres, {quote(genre)})" if genre else "",
            output_fields=["genres", "model_version"],
            search_params={"metric_type": "COSINE",
                           "params": {"ef": max(self.section.search_ef, want)}})[0]
        skip = set(exclude)
        out = [Neighbour(str(h["id"]), float(h["distance"]),
                         tuple(h["entity"].get("genres") or ()),
                         str(h["entity"].get("model_version") or ""))
               for h in hits if str(h["id"]) not in skip]
        return out[:limit]

    def close(self) -> None:
        self.client.close()
