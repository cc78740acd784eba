"""The embeddings output: each tagged track's vector (float16) into the tag store, after its tags.

Needs a schema-2 artifact (its manifest names the embedding); the vector index is fed from what
this writes (``genretag index sync``, or the embedded engine's sync on query), never by the
worker, so the embedded index file is never locked by a worker and the store stays the truth.
"""

from __future__ import annotations

from collections.abc import Sequence

from genretag.core.errors import UsageError
from genretag.core.store import EmbeddingWriter, KeyLayout, TrackVector, connect
from genretag.worker.job import Outcome
from genretag.worker.settings import WorkerSettings
from genretag.worker.sinks.base import SinkContext
from genretag.worker.sinks.tags import URGENT_TIMEOUT_S


class EmbeddingSink:
    """Writes the vector of every outcome with tags (one Lua write per track)."""

    name = "embeddings"
    operation = "redis_write_embeddings"

    def __init__(self, writer: EmbeddingWriter, urgent_writer: EmbeddingWriter, space: str) -> None:
        self.writer = writer
        self.urgent_writer = urgent_writer
        self.space = space

    def write(self, outcomes: Sequence[Outcome], *, urgent: bool = False) -> dict[str, str]:
        writer = self.urgent_writer if urgent else self.writer
        return writer.write(
            TrackVector(o.record.track_id, o.embedding, self.space, o.record.model_version)
            for o in outcomes if o.record is not None and o.embedding is not None)

    def close(self) -> None:
        self.writer.client.close()
        self.urgent_writer.client.close()


def build(settings: WorkerSettings, context: SinkContext) -> EmbeddingSink:
    """The embeddings sink of ``settings``' Redis; the model must have an embedding output."""
    spec = context.manifest.embedding
    if spec is None:
        raise UsageError(
            f"sink 'embeddings': model {context.manifest.version} has no embedding output "
            "(artifact schema 1); re-export or pull it again, or drop 'embeddings' from sinks")
    keys = KeyLayout(settings.redis.key_prefix)
    urgent = min(URGENT_TIMEOUT_S, settings.redis.socket_timeout_s)
    return EmbeddingSink(EmbeddingWriter(connect(settings.redis, binary=True), keys),
                         EmbeddingWriter(connect(settings.redis, binary=True,
                                                 socket_timeout_s=urgent), keys),
                         spec.space)
