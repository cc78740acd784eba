"""The embedded vector index: usearch HNSW files in a folder, no server (``index_uri`` ending in
``.usearch``, the default).

Per embedding space one usearch index (cosine, float16 like the stored vectors, HNSW ``hnsw_m``
/ ``ef_construction``) in ``<collection>.usearch``; ``meta.sqlite`` maps its integer keys to
track ids, genres and model versions and keeps the sync mark. A re-upserted track gets a new
key (the old one is removed from the graph). Changes are kept in memory and written by
:meth:`UsearchIndex.flush` — index files first, then the mapping and the mark in one SQLite
transaction — so a crash before it leaves the previous state and the sync redoes the rest. A
``--genre`` query is exact (cosine over the genre's tracks). One process opens the folder at a
time (an exclusive ``flock``); readers view the files memory-mapped until they must write.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genretag.core.settings import IndexSection
from genretag.core.similarity.engine import (
    MAX_GENRES, IndexedTrack, Neighbour, VectorIndexError, collection_name,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (name TEXT PRIMARY KEY, space TEXT NOT NULL, dim INTEGER);
CREATE TABLE IF NOT EXISTS rows (name TEXT, track_id TEXT, key INTEGER, model_version TEXT,
                                 genres TEXT, PRIMARY KEY (name, track_id));
CREATE INDEX IF NOT EXISTS rows_key ON rows (name, key);
CREATE TABLE IF NOT EXISTS genres (name TEXT, genre TEXT, key INTEGER);
CREATE INDEX IF NOT EXISTS genres_genre ON genres (name, genre);
CREATE TABLE IF NOT EXISTS props (k TEXT PRIMARY KEY, v TEXT);
"""


class UsearchIndex:
    """The embedded similarity index of one folder."""

    def __init__(self, section: IndexSection) -> None:
        from usearch.index import Index  # noqa: PLC0415 - only for index commands

        self._Index = Index
        self.section = section
        self.root = Path(section.uri).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / "LOCK", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise VectorIndexError(
                f"the embedded index {section.uri} is open in another process; stop it (an "
                "`index sync --follow`?), or serve the index from Milvus "
                "(GENRETAG_INDEX_URI=http://...)") from None
        self.db = sqlite3.connect(self.root / "meta.sqlite", isolation_level=None)
        self.db.executescript(SCHEMA)
        self.db.execute("BEGIN")  # one transaction until flush()
        self._indexes: dict[str, object] = {}  # collection → usearch Index (viewed or loaded)
        self._writable: set[str] = set()
        self._dirty: set[str] = set()

    # -- names and files ----------------------------------------------------------------------
    def collection(self, space: str) -> str:
        return collection_name(self.section.collection_prefix, space)

    def spaces(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM spaces ORDER BY name")]

    def _file(self, name: str) -> Path:
        return self.root / f"{name}.usearch"

    def _index(self, name: str, writable: bool = False):
        """The collection's index: memory-mapped for reads, loaded to change it."""
        if name in self._indexes and (not writable or name in self._writable):
            return self._indexes[name]
        path = self._file(name)
        if path.is_file():
            index = self._Index.restore(str(path), view=not writable)
        else:
            dim = self.db.execute("SELECT dim FROM spaces WHERE name = ?", (name,)).fetchone()
            if dim is None:
                return None
            index = self._new(int(dim[0]))
        self._indexes[name] = index
        if writable:
            self._writable.add(name)
        return index

    def _new(self, dim: int):
        return self._Index(ndim=dim, metric="cos", dtype="f16", connectivity=self.section.hnsw_m,
                           expansion_add=self.section.ef_construction,
                           expansion_search=self.section.search_ef)

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, space: str, rows: Sequence[IndexedTrack]) -> None:
        if not rows:
            return
        name = self.collection(space)
        self.db.execute("INSERT OR IGNORE INTO spaces VALUES (?, ?, ?)",
                        (name, space, int(len(rows[0].vector))))
        index = self._index(name, writable=True)
        self.delete(name, [r.track_id for r in rows])
        start = int(self._prop("next_key", "1"))
        keys = np.arange(start, start + len(rows), dtype=np.uint64)
        index.add(keys, np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows]))
        self._set_prop("next_key", str(start + len(rows)))
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", [
            (name, r.track_id, int(k), r.model_version, json.dumps(list(r.genres[:MAX_GENRES])))
            for r, k in zip(rows, keys, strict=True)])
        self.db.executemany("INSERT INTO genres VALUES (?, ?, ?)", [
            (name, g, int(k)) for r, k in zip(rows, keys, strict=True) for g in r.genres[:MAX_GENRES]])
        self._dirty.add(name)

    def delete(self, collection: str, track_ids: Sequence[str]) -> int:
        found: list[int] = []
        for chunk in _chunks(list(track_ids), 500):
            marks = ",".join("?" * len(chunk))
            found += [r[0] for r in self.db.execute(
                f"SELECT key FROM rows WHERE name = ? AND track_id IN ({marks})",  # noqa: S608
                (collection, *chunk))]
            self.db.execute(f"DELETE FROM rows WHERE name = ? AND track_id IN ({marks})",  # noqa: S608
                            (collection, *chunk))
        if found:
            index = self._index(collection, writable=True)
            if index is not None:
                index.remove(np.array(found, dtype=np.uint64))
            for chunk in _chunks(found, 500):
                self.db.execute(f"DELETE FROM genres WHERE name = ? AND key IN "  # noqa: S608
                                f"({','.join('?' * len(chunk))})", (collection, *chunk))
            self._dirty.add(collection)
        return len(found)

    def drop_all(self) -> None:
        self.db.execute("ROLLBACK")
        self._indexes.clear()
        self._writable.clear()
        self._dirty.clear()
        for name in self.spaces():
            self._file(name).unlink(missing_ok=True)
        self.db.execute("BEGIN")
        for table in ("spaces", "rows", "genres", "props"):
            self.db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        self.flush()

    def _prop(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT v FROM props WHERE k = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_prop(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO props VALUES (?, ?)", (key, value))

    def mark(self) -> int:
        return int(self._prop("mark", "0"))

    def set_mark(self, seq: int) -> None:
        """Kept with the changes; durable at :meth:`flush`."""
        self._set_prop("mark", str(int(seq)))

    def owner(self) -> str:
        return self._prop("owner", "")

    def set_owner(self, store: str) -> None:
        self._set_prop("owner", store)

    def flush(self) -> None:
        """Write the changed index files (atomically each), then commit mapping and mark."""
        for name in sorted(self._dirty):
            tmp = self._file(name).with_suffix(".usearch.tmp")
            self._indexes[name].save(str(tmp))
            os.replace(tmp, self._file(name))
        self._dirty.clear()
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    # -- reads --------------------------------------------------------------------------------
    def count(self, collection: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rows WHERE name = ?",
                                   (collection,)).fetchone()[0])

    def search(self, space: str, vector: np.ndarray, limit: int, genre: str | None = None,
               exclude: Sequence[str] = ()) -> list[Neighbour]:
        name = self.collection(space)
        index = self._index(name)
        if index is None or len(index) == 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        want = limit + len(exclude)
        if genre:
            keys = np.array([r[0] for r in self.db.execute(
                "SELECT key FROM genres WHERE name = ? AND genre = ?", (name, genre))],
                dtype=np.uint64)
            keys, sims = _exact(index, keys, query, want)
        else:
            index.expansion_search = max(self.section.search_ef, want)
            found = index.search(query, want)
            keys, sims = np.asarray(found.keys), 1.0 - np.asarray(found.distances)
        rows = self._rows(name, [int(k) for k in keys])
        skip = set(exclude)
        out = [Neighbour(rows[k][0], float(s), rows[k][1], rows[k][2])
               for k, s in zip((int(k) for k in keys), sims, strict=True)
               if k in rows and rows[k][0] not in skip]
        return out[:limit]

    def _rows(self, name: str, keys: list[int]) -> dict[int, tuple[str, tuple[str, ...], str]]:
        out: dict[int, tuple[str, tuple[str, ...], str]] = {}
        for chunk in _chunks(keys, 500):
            for key, tid, version, genres in self.db.execute(
                    f"SELECT key, track_id, model_version, genres FROM rows WHERE name = ? AND "  # noqa: S608
                    f"key IN ({','.join('?' * len(chunk))})", (name, *chunk)):
                out[int(key)] = (tid, tuple(json.loads(genres or "[]")), version or "")
        return out

    def close(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")  # unflushed changes are redone by the next sync
        self.db.close()
        self._indexes.clear()
        os.close(self._lock_fd)

    def remove_files(self) -> None:
        """Delete the whole folder (tests, `index rebuild --fresh`)."""
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _exact(index, keys: np.ndarray, query: np.ndarray, want: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``want`` of ``keys`` by exact cosine to ``query`` (a filtered query)."""
    if len(keys) == 0:
        return keys, np.zeros(0)
    vectors = np.asarray(index.get(keys), dtype=np.float32).reshape(len(keys), -1)
    norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    sims = vectors @ query / np.maximum(norms, 1e-12)
    order = np.argsort(-sims)[:want]
    return keys[order], sims[order]
