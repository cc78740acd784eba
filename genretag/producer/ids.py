"""Stable track ids (moved to :mod:`genretag.core.ids`, which training's ``--from-store`` shares)."""

from genretag.core.ids import fma_track_id, path_track_id, uri_track_id

__all__ = ["fma_track_id", "path_track_id", "uri_track_id"]
