"""Where a track's audio is, and whether the worker may read it.

Local paths must resolve (symlinks included) under one of the allowed roots; only ``file://``
and bare paths are accepted unless http(s) is enabled. Everything FFmpeg would otherwise
interpret (``concat:``, ``subfile:``, ``data:``, ``pipe:``...) is refused before FFmpeg runs.

A vetted local file is opened here, in Python (:func:`open_vetted`: ``O_NOFOLLOW``, then fstat
of the descriptor must show the same regular file that was vetted, under the size cap), and
FFmpeg gets only that descriptor: a path swapped for a symlink after vetting is never followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from schemas import ReasonCode
from core.errors import PermanentError

#: The setting that lists the allowed roots, named in every "outside the roots" dead letter.
ROOTS_SETTING = "GENRETAG_ALLOWED_ROOTS"


@dataclass(frozen=True)
class AudioSource:
    """A vetted input for FFmpeg: a local file (size, identity, cap) or an http(s) URL.

    ``dev``/``ino`` identify the file that was vetted (None: not recorded, e.g. in tests);
    ``max_bytes`` is the size cap checked again on the opened descriptor.
    """

    target: str
    is_local: bool
    size_bytes: int | None = None
    dev: int | None = None
    ino: int | None = None
    max_bytes: int | None = None


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
            raise fail(ReasonCode.DISALLOWED_URI,
                       f"scheme {scheme!r} is not allowed (GENRETAG_ALLOW_HTTP is off)")
        return AudioSource(target=uri, is_local=False)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise fail(ReasonCode.DISALLOWED_URI, f"file URI with host {parsed.netloc!r}")
        raw_path = unquote(parsed.path)
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        raw_path = uri
    else:
        raise fail(ReasonCode.DISALLOWED_URI, f"scheme {scheme!r} is not allowed")
    if "\x00" in raw_path or any(ord(ch) < 32 for ch in raw_path):
        raise fail(ReasonCode.DISALLOWED_URI, "path contains a NUL or control character")

    path = Path(raw_path)
    if not path.is_absolute():
        raise fail(ReasonCode.DISALLOWED_URI, f"path {raw_path!r} is not absolute")
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        # Check the roots even for missing files, so "missing" never leaks outside the roots.
        real = path.resolve(strict=False)
        _check_roots(real, allowed_roots, fail)
        raise fail(ReasonCode.MISSING_FILE, f"no such file: {raw_path!r}") from None
    except (OSError, RuntimeError, ValueError) as exc:  # loops, permissions, odd bytes
        raise fail(ReasonCode.MISSING_FILE, f"cannot resolve {raw_path!r}: {exc}") from None
    _check_roots(real, allowed_roots, fail)
    try:
        st = os.stat(real)  # the resolved path has no symlinks left
    except OSError as exc:
        raise fail(ReasonCode.MISSING_FILE, f"cannot stat {raw_path!r}: {exc}") from None
    _check_stat(st, raw_path, max_file_bytes, fail)
    return AudioSource(target=str(real), is_local=True, size_bytes=st.st_size, dev=st.st_dev,
                       ino=st.st_ino, max_bytes=max_file_bytes)


def open_vetted(source: AudioSource, track_id: str | None = None) -> int:
    """Open the vetted local file for reading; returns a descriptor the caller must close.

    ``O_NOFOLLOW`` (a final symlink is refused) and ``O_NONBLOCK`` (a FIFO or device never
    blocks the open); the descriptor's fstat must be a regular file, non-empty, under the cap
    and, when recorded, the very file (device, inode) that :func:`resolve_source` vetted.
    """

    def fail(reason: ReasonCode, message: str) -> PermanentError:
        return PermanentError(reason, message, track_id=track_id, stage="validate")

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(source.target, flags)
    except OSError as exc:
        raise fail(ReasonCode.MISSING_FILE,
                   f"cannot open {source.target!r} (changed since vetting?): {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        _check_stat(st, source.target, source.max_bytes, fail)
        if source.ino is not None and (st.st_dev, st.st_ino) != (source.dev, source.ino):
            raise fail(ReasonCode.DISALLOWED_URI,
                       f"{source.target!r} was replaced after vetting: not the file checked")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_stat(st: os.stat_result, shown: str, max_bytes: int | None, fail) -> None:
    """Regular, non-empty, at most ``max_bytes``: the same rules at vetting and at open."""
    if not stat.S_ISREG(st.st_mode):
        raise fail(ReasonCode.MISSING_FILE, f"not a regular file: {shown!r}")
    if st.st_size == 0:
        raise fail(ReasonCode.EMPTY_FILE, f"file is empty: {shown!r}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise fail(ReasonCode.TOO_LARGE,
                   f"file is {st.st_size} bytes, cap is {max_bytes} (GENRETAG_MAX_FILE_BYTES)")


def _check_roots(real: Path, allowed_roots: list[str], fail) -> None:
    for root in allowed_roots:
        root_real = Path(root).resolve()
        if real == root_real or real.is_relative_to(root_real):
            return
    raise fail(ReasonCode.DISALLOWED_URI,
               f"path resolves outside the allowed roots ({ROOTS_SETTING}): {str(real)!r}")
