"""The Redis tag store, by responsibility: key layout (``keys``), the client (``connect``), the
one write path (``write``), reads (``read``), dead-letter admin (``deadletters``) and the
track vectors (``embeddings``)."""

from genretag.core.store.connect import connect
from genretag.core.store.deadletters import DeadLetterStore, StoredDeadLetter
from genretag.core.store.embeddings import (
    EmbeddingReader, EmbeddingWriter, StoredEmbedding, TrackVector,
)
from genretag.core.store.keys import DeadLetterSlot, KeyLayout
from genretag.core.store.read import StoreStats, TagReader, record_from_hash
from genretag.core.store.write import PreviousTags, TagWriter, WriteResult

__all__ = [
    "DeadLetterSlot", "DeadLetterStore", "EmbeddingReader", "EmbeddingWriter", "KeyLayout",
    "PreviousTags", "StoreStats", "StoredDeadLetter", "StoredEmbedding", "TagReader", "TagWriter",
    "TrackVector", "WriteResult", "connect", "record_from_hash",
]
