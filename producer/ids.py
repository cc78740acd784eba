"""Stable track ids: the catalog's id when it has one, else derived from the file's path."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def path_track_id(path: Path) -> str:
    """``<stem>-<12 hex of sha1(resolved path)>``: readable, and the same file gives the same id."""
    resolved = str(Path(path).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    stem = _SAFE.sub("_", Path(path).stem).strip("._-")[:40] or "track"
    return f"{stem}-{digest}"
