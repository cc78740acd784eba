"""Similarity search over the stored track vectors ("more like this"), torch-free.

``engine`` picks the vector engine by ``index_uri`` (``embedded``: usearch files, the default;
``milvus``: a Milvus server or cluster, or milvus-lite for a ``.db`` file), ``sync`` keeps its
index in step with the tag store (the source of truth: ``P emb-log``), ``search`` answers
"tracks like this one" for a stored track or a vector. The read path imports no torch, so a
light client can use it; embedding a new file needs the model (``genretag similar FILE``).
"""

from genretag.core.similarity.engine import (
    IndexedTrack, Neighbour, VectorIndex, VectorIndexError, open_index,
)
from genretag.core.similarity.search import SimilaritySearch, UnknownTrack
from genretag.core.similarity.sync import IndexSync, SyncReport

__all__ = ["IndexSync", "IndexedTrack", "Neighbour", "SimilaritySearch", "SyncReport",
           "UnknownTrack", "VectorIndex", "VectorIndexError", "open_index"]
