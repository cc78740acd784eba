"""Where a track's audio is, and whether the worker may read it.

Local paths must resolve (symlinks included) under one of the allowed roots; only ``file://``
and bare paths are accepted unless http(s) is enabled. Everything FFmpeg or libav would
otherwise interpret (``concat:``, ``subfile:``, ``data:``, ``pipe:``...) is refused before any
decoder runs.

A vetted local file is opened here, in Python (:func:`open_vetted`: ``O_NOFOLLOW``, then fstat
of the descriptor must show the same regular file that was vetted, under the size cap), and
either decoder gets only that descriptor (FFmpeg as ``/proc/self/fd/N``, a libav decoder process
as ``/proc/PID/fd/N``, checking the inode): a path swapped for a symlink after vetting is never
followed.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from genretag.schemas import ReasonCode
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger

log = get_logger(__name__)

#: The setting that lists the allowed roots, named in every "outside the roots" dead letter.
ROOTS_SETTING = "GENRETAG_ALLOWED_ROOTS"
#: open() failures that say nothing about the file: this process (or the system) is out of
#: descriptors or memory. Descriptors come back as other decodes finish, so the open is retried.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
#: Waits (seconds) before each retry of an open that hit :data:`EXHAUSTED`: ~1.5 s in all.
EXHAUSTED_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class AudioSource:
    """A vetted input for a decoder: a local file (size, identity, cap) or an http(s) URL.

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
    """Validate ``uri`` and return what a decoder may open; raises :class:`PermanentError`."""

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

    fd = _open_retrying(source.target, fail, track_id)
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


def _open_retrying(target: str, fail: Callable[[ReasonCode, str], PermanentError],
                   track_id: str | None) -> int:
    """``os.open`` the target for :func:`open_vetted`, retrying while descriptors run out.

    A file that cannot be opened is ``missing_file``; a process out of descriptors (or memory)
    says nothing about the file, so the open waits for descriptors to come back and, if they
    never do, the message is parked as ``internal`` with the fix, not blamed on the file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    for wait_s in (*EXHAUSTED_BACKOFF_S, None):
        try:
            return os.open(target, flags)
        except OSError as exc:
            if exc.errno not in EXHAUSTED:
                raise fail(ReasonCode.MISSING_FILE,
                           f"cannot open {target!r} (changed since vetting?): {exc.strerror}"
                           ) from None
            if wait_s is None:
                log.error("uri.out_of_descriptors", extra={"why": exc.strerror,
                                                           "track_id": track_id})
                raise fail(ReasonCode.INTERNAL,
                           f"cannot open {target!r}: {exc.strerror}: this worker is out of file "
                           "descriptors or memory (raise its open-files limit, `ulimit -n`, or "
                           "lower DECODE_WORKERS); the file was not judged, replay it") from None
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def open_each(sources: Sequence[AudioSource], track_ids: Sequence[str | None],
              ) -> tuple[dict[int, int | None], dict[int, PermanentError]]:
    """:func:`open_vetted` for each local source of a group: descriptors by index (None for a
    remote source) and the errors of those that failed. On an unexpected error every
    descriptor opened so far is closed; otherwise the caller closes them."""
    fds: dict[int, int | None] = {}
    errors: dict[int, PermanentError] = {}
    try:
        for k, src in enumerate(sources):
            try:
                fds[k] = open_vetted(src, track_ids[k]) if src.is_local else None
            except PermanentError as exc:
                errors[k] = exc
    except BaseException:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)
        raise
    return fds, errors


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
