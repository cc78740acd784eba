"""Similarity search over the stored track vectors ("more like this"), torch-free.

``engine`` wraps the vector engine (Milvus through one ``pymilvus`` client: embedded milvus-lite
for a ``.db`` file, a Milvus server or cluster for an ``http(s)://`` URI), ``sync`` keeps its
index in step with the tag store (the source of truth: ``P emb-log``), ``search`` answers
"tracks like this one" for a stored track or a vector. The read path imports no torch, so a
light client can use it; embedding a new file needs the model (``genretag similar FILE``).
"""

from genretag.core.similarity.engine import IndexedTrack, Neighbour, VectorIndex, VectorIndexError
from genretag.core.similarity.search import SimilaritySearch, UnknownTrack
from genretag.core.similarity.sync import IndexSync, SyncReport

__all__ = ["IndexSync", "IndexedTrack", "Neighbour", "SimilaritySearch", "SyncReport",
           "UnknownTrack", "VectorIndex", "VectorIndexError"]
