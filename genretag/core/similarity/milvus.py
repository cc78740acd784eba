"""Milvus through the ``pymilvus`` client: a Milvus standalone server or cluster
(``index_uri`` ``http(s)://``, deploy/), or milvus-lite for a ``.db`` file (the same client
calls in this process; tests and small catalogs: its queries cost Python time per stored row,
docs/similarity.md).

One collection per embedding space (vectors of different spaces are not comparable), named
from the space; each row is a track: its id, its vector (cosine), its genre labels (for
``--genre``) and the model version. HNSW (``hnsw_m``, ``ef_construction``; ``search_ef`` at
query time). A small meta collection keeps the sync mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genretag.core.settings import IndexSection
from genretag.core.similarity.engine import (
    MAX_GENRES, IndexedTrack, Neighbour, VectorIndexError, collection_name, quote,
)

#: Longest track id (the TrackRef contract allows 128 characters) and label the rows hold.
MAX_ID, MAX_LABEL = 128, 256
#: Collection properties keys of the sync mark (sequence number of the last synced write) and
#: of the store the index mirrors.
MARK, OWNER = "genretag.synced_seq", "genretag.store"


class MilvusIndex:
    """The similarity index in Milvus (a server, or milvus-lite for a ``.db`` file)."""

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
        return collection_name(self.section.collection_prefix, space)

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
        held = self.client.query(collection, output_fields=["id"], filter=(
            f"id in [{', '.join(quote(t) for t in track_ids)}]"))
        if held:
            self.client.delete(collection, ids=[str(r["id"]) for r in held])
        return len(held)

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
        self._set_meta(MARK, str(int(seq)))

    def owner(self) -> str:
        if not self.client.has_collection(self.meta):
            return ""
        return str((self.client.describe_collection(self.meta).get("properties") or {}).get(
            OWNER, ""))

    def set_owner(self, store: str) -> None:
        self._set_meta(OWNER, store)

    def _set_meta(self, key: str, value: str) -> None:
        if not self.client.has_collection(self.meta):
            self.client.create_collection(self.meta, dimension=2)
        self.client.alter_collection_properties(self.meta, properties={key: value})

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

    def flush(self) -> None:
        """Nothing to do: every call above is durable when it returns."""

    def close(self) -> None:
        self.client.close()
