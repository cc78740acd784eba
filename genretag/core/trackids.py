"""Stable track ids: the catalog's id when it has one, else derived from the file's path.

Shared by the producer (which assigns ids) and the read side (``genretag.client``, `tags --uri`),
which must derive the very same id from a path without importing the producer service, and by
training (`--from-store` finds a labelled file's stored track by the id its path was enqueued under).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _readable_stem(name: str) -> str:
    """The file name's stem reduced to id-safe characters (a hint for humans, not the identity)."""
    return _SAFE.sub("_", Path(name).stem).strip("._-")[:40] or "track"


def path_track_id(path: str | Path) -> str:
    """``<stem>-<12 hex of sha1(resolved path)>``: readable, and the same file gives the same id."""
    resolved = str(Path(path).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    return f"{_readable_stem(Path(path).name)}-{digest}"


def uri_track_id(uri: str) -> str:
    """Id of a catalog row that has a uri but no id: local paths and ``file://`` by their path.

    Other schemes (``http://...``) hash the whole URI, so the same URI always gives the same id.
    """
    parts = urlsplit(uri)
    if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # "C:\\..." is a path, not a scheme
        local = unquote(parts.path) if parts.scheme == "file" else uri
        return path_track_id(local)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
    return f"{_readable_stem(unquote(parts.path).rsplit('/', 1)[-1])}-{digest}"


def fma_track_id(track_id: int) -> str:
    """FMA's own id, zero-padded to six digits like its file names (``2`` → ``000002``)."""
    if track_id < 0:
        raise ValueError(f"FMA track id must not be negative, got {track_id}")
    return f"{int(track_id):06d}"
