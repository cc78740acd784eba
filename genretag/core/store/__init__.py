"""The Redis tag store, by responsibility: key layout (``keys``), the client (``connect``), the
one write path (``write``), reads (``read``), dead-letter admin (``deadletters``) and the
track vectors (``embeddings``)."""

from genretag.core.store.connect import connect
from genretag.core.store.deadletters import DeadLetterStore, StoredDeadLetter
from genretag.core.store.keys import DeadLetterSlot, KeyLayout
from genretag.core.store.read import StoreStats, TagReader, record_from_hash
from genretag.core.store.write import PreviousTags, TagWriter, WriteResult

#: Exported lazily: the vectors need numpy, which the light install (the client) does not have.
_EMBEDDINGS = ("EmbeddingReader", "EmbeddingWriter", "StoredEmbedding", "TrackVector")


def __getattr__(name: str):
    if name in _EMBEDDINGS:
        from genretag.core.store import embeddings

        return getattr(embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeadLetterSlot", "DeadLetterStore", "EmbeddingReader", "EmbeddingWriter", "KeyLayout",
    "PreviousTags", "StoreStats", "StoredDeadLetter", "StoredEmbedding", "TagReader", "TagWriter",
    "TrackVector", "WriteResult", "connect", "record_from_hash",
]
