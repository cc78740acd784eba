"""Where a track's audio is, and whether the worker may read it.

Local paths must resolve (symlinks included) under one of the allowed roots; only ``file://``
and bare paths are accepted unless http(s) is enabled. Everything FFmpeg would otherwise
interpret (``concat:``, ``subfile:``, ``data:``, ``pipe:``...) is refused before FFmpeg runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from schemas import ReasonCode
from core.errors import PermanentError


@dataclass(frozen=True)
class AudioSource:
    """A vetted input for FFmpeg: either a local file (with its size) or an http(s) URL."""

    target: str
    is_local: bool
    size_bytes: int | None = None


def resolve_source(
    uri: str,
    allowed_roots: list[str],
    *,
    allow_http: bool = False,
    max_file_bytes: int | None = None,
    track_id: str | None = None,
) -> AudioSource:
    """Validate ``uri`` and return what FFmpeg may open; raises :class:`PermanentError`."""

    def fail(reason: ReasonCode, message: str) -> PermanentError:
        return PermanentError(reason, message, track_id=track_id, stage="validate")

    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not allow_http:
            raise fail(ReasonCode.DISALLOWED_URI, f"scheme {scheme!r} is not allowed")
        return AudioSource(target=uri, is_local=False)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise fail(ReasonCode.DISALLOWED_URI, f"file URI with host {parsed.netloc!r}")
        raw_path = unquote(parsed.path)
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        raw_path = uri
    else:
        raise fail(ReasonCode.DISALLOWED_URI, f"scheme {scheme!r} is not allowed")

    path = Path(raw_path)
    if not path.is_absolute():
        raise fail(ReasonCode.DISALLOWED_URI, f"path {raw_path!r} is not absolute")
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        # Check the roots even for missing files, so "missing" never leaks outside the roots.
        real = path.resolve(strict=False)
        _check_roots(real, allowed_roots, fail)
        raise fail(ReasonCode.MISSING_FILE, f"no such file: {raw_path}") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
        raise fail(ReasonCode.MISSING_FILE, f"cannot resolve {raw_path}: {exc}") from None
    _check_roots(real, allowed_roots, fail)
    if not real.is_file():
        raise fail(ReasonCode.MISSING_FILE, f"not a regular file: {raw_path}")
    size = real.stat().st_size
    if size == 0:
        raise fail(ReasonCode.EMPTY_FILE, f"file is empty: {raw_path}")
    if max_file_bytes is not None and size > max_file_bytes:
        raise fail(ReasonCode.TOO_LARGE, f"file is {size} bytes, cap is {max_file_bytes}")
    return AudioSource(target=str(real), is_local=True, size_bytes=size)


def _check_roots(real: Path, allowed_roots: list[str], fail) -> None:
    for root in allowed_roots:
        root_real = Path(root).resolve()
        if real == root_real or real.is_relative_to(root_real):
            return
    raise fail(ReasonCode.DISALLOWED_URI, f"path resolves outside the allowed roots: {real}")
