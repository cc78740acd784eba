"""Track ids as the producer assigns them; the functions live in :mod:`genretag.core.trackids`
so the read side (the client, `tags --uri`) derives the same ids without importing the producer."""

from genretag.core.trackids import fma_track_id, path_track_id, uri_track_id

__all__ = ["fma_track_id", "path_track_id", "uri_track_id"]
