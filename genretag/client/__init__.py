"""The Python client of genretag: read the tags the workers stored, without the ML stack.

``pip install genretag`` (no extras) is enough: this package imports redis, pydantic and the
contracts (:mod:`genretag.schemas`), never torch, torchaudio, PyAV or numpy. ::

    from genretag.client import TagClient

    with TagClient.connect("redis://127.0.0.1:6379/0") as tags:
        record = tags.tags_of_uri("~/Music/song.mp3")      # TagRecord | None
        page = tags.tracks("rock", min_score=0.5, limit=20)
        more = tags.tracks("rock", min_score=0.5, offset=page.next_offset)

Queries: tags of a track by id or URI, tracks of a genre or another tag with scores and
pagination, labels of a kind, timelines, dead letters (list, purge), counts. Similarity queries
will join :class:`TagClient` once the workers store embeddings.
"""

from genretag.client.client import TagClient
from genretag.client.pages import Page, PurgeResult, ScoredTrack, Stats
from genretag.core.store import StoredDeadLetter
from genretag.schemas import DeadLetter, ReasonCode, TagRecord, Timeline

__all__ = [
    "DeadLetter", "Page", "PurgeResult", "ReasonCode", "ScoredTrack", "Stats",
    "StoredDeadLetter", "TagClient", "TagRecord", "Timeline",
]
