"""Track vectors in the tag store: one float16 vector per track, with its space and model version.

A write is one Lua script per track (standard commands only): it refuses a track whose
``P emb:<id>`` key holds another type (``TRACKKEY``, like the tag write), replaces the hash and
records the write's sequence number in ``P emb-log``, atomically, so a vector index that synced
up to sequence ``n`` finds every later change above ``n`` (see :mod:`genretag.core.similarity`).
A redelivered batch writes the same vectors again (new sequence numbers, same state otherwise).
The store is the source of truth; the index is rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from genretag.core.errors import REDIS_TRACK_CODES, redis_error_code
from genretag.core.store.keys import KeyLayout

#: Byte order and type of a stored vector.
VECTOR_DTYPE = np.dtype("<f2")

WRITE_EMBEDDING_LUA = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  return redis.error_reply('TRACKKEY ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a hash')
end
local seq = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'vector', ARGV[2], 'space', ARGV[3], 'model_version', ARGV[4],
           'seq', seq)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
"""


@dataclass(frozen=True)
class TrackVector:
    """One track's vector to store (float32 in memory, float16 in Redis)."""

    track_id: str
    vector: np.ndarray
    space: str
    model_version: str


@dataclass(frozen=True)
class StoredEmbedding:
    """A stored vector as read back (float32 copy of the float16 values)."""

    track_id: str
    vector: np.ndarray
    space: str
    model_version: str
    seq: int


def encode_vector(vector: np.ndarray) -> bytes:
    """float16 little-endian bytes; raises ValueError for a value float16 cannot hold."""
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(arr)) or float(np.abs(arr).max(initial=0.0)) > float(
            np.finfo(np.float16).max):
        raise ValueError("vector is not finite or exceeds float16")
    return arr.astype(VECTOR_DTYPE).tobytes()


def decode_vector(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else (value or "")


class EmbeddingWriter:
    """Idempotent writes of track vectors (the embeddings sink's one write path)."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self._script = client.register_script(WRITE_EMBEDDING_LUA)

    def write(self, vectors: Iterable[TrackVector]) -> dict[str, str]:
        """Write a batch in one pipeline round trip; returns tracks refused for their own key
        (id → why). Any other error reply is raised after the whole batch ran (retry it)."""
        vectors = list(vectors)
        if not vectors:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for v in vectors:
            self._script(keys=[self.keys.embedding(v.track_id), self.keys.embedding_seq,
                               self.keys.embedding_log],
                         args=[v.track_id, encode_vector(v.vector), v.space, v.model_version],
                         client=pipe)
        refused: dict[str, str] = {}
        for v, reply in zip(vectors, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                if redis_error_code(reply) in REDIS_TRACK_CODES:
                    refused[v.track_id] = str(reply)
                    continue
                raise reply
        return refused


class EmbeddingReader:
    """Reads of stored vectors: by track, by change since a sequence number, all of them.

    ``client`` must reply bytes (``connect(..., binary=True)``): the vectors are binary.
    """

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    def get_many(self, track_ids: Sequence[str]) -> dict[str, StoredEmbedding | None]:
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hmget(self.keys.embedding(tid), ["vector", "space", "model_version", "seq"])
        out: dict[str, StoredEmbedding | None] = {}
        for tid, (raw, space, version, seq) in zip(track_ids, pipe.execute(), strict=True):
            out[tid] = None if raw is None else StoredEmbedding(
                tid, decode_vector(raw), _text(space), _text(version), int(seq or 0))
        return out

    def get(self, track_id: str) -> StoredEmbedding | None:
        return self.get_many([track_id])[track_id]

    def last_seq(self) -> int:
        """Sequence number of the last write (0: none yet)."""
        return int(self.client.get(self.keys.embedding_seq) or 0)

    def count(self) -> int:
        """Tracks with a stored vector."""
        return int(self.client.zcard(self.keys.embedding_log))

    def changed_since(self, seq: int, limit: int = 1000) -> list[tuple[str, int]]:
        """(track id, seq) of the writes after ``seq``, oldest first, at most ``limit``."""
        rows = self.client.zrangebyscore(self.keys.embedding_log, f"({seq}", "+inf", start=0,
                                         num=limit, withscores=True)
        return [(_text(member), int(score)) for member, score in rows]

    def iter_changed(self, seq: int = 0, batch: int = 1000
                     ) -> Iterator[list[StoredEmbedding]]:
        """Every vector written after ``seq``, in batches, oldest change first."""
        while True:
            rows = self.changed_since(seq, batch)
            if not rows:
                return
            found = self.get_many([tid for tid, _ in rows])
            yield [v for v in found.values() if v is not None]
            seq = rows[-1][1]
