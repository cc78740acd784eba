"""A checked, opened file's audio as one timeline: its container, or each link of a chained Ogg.

:func:`opened` opens the file itself (``O_NOFOLLOW``, or the parent's vetted descriptor with its
inode checked; regular, non-empty, under the cap), gives PyAV only the file object and the
audio demuxer whitelist, and yields a :class:`Media`: one :class:`Part` per container. A plain
file is one part; a chained Ogg file (:mod:`genretag.core.audio.libav.ogg`) is one part per
link, each opened when its turn comes and closed after, placed on the track's timeline after
the links before it. Everything that reads packets or frames goes through :class:`Media`, so
decode (:mod:`.decode`) and a track's checks (:mod:`.track`) see links as one stream.

Stays free of the project's heavier imports: it runs inside the decoder processes.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import av

from genretag.core.audio.libav.ogg import LinkFile, ogg_links
from genretag.core.audio.libav.request import (DISALLOWED_URI, EMPTY_FILE, MISSING_FILE,
                                               TOO_LARGE, UNDECODABLE, LibavError, Request, why)
from genretag.core.audio.placement import MISMATCH_SECONDS, TAIL_SECONDS

#: Decode errors tolerated per part before giving up (the CLI skips bad packets too).
MAX_PACKET_ERRORS = 200
#: libavformat's warning when a duration is only a bitrate guess (the CLI path reads it too).
_ESTIMATED = "Estimating duration from bitrate"
#: Bytes PyAV reads per call from the file object.
_IO_BUFFER = 1 << 16


def open_checked(path: str, max_file_bytes: int | None,
                 identity: tuple[int, int] | None = None) -> BinaryIO:
    """Open ``path`` read-only, not following a final symlink: a non-empty regular file.

    With ``identity``, ``path`` is a descriptor the parent opened and vetted
    (``/proc/PID/fd/N``, a link by design): it is followed, and the file opened must have
    that (device, inode).
    """
    nofollow = 0 if identity else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LibavError(MISSING_FILE, f"no such file: {path}") from None
    except OSError as exc:  # ELOOP: a symlink swapped in after validation; EACCES...
        raise LibavError(MISSING_FILE, f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LibavError(MISSING_FILE, f"not a regular file: {path}")
        if identity and (st.st_dev, st.st_ino) != tuple(identity):
            raise LibavError(DISALLOWED_URI, f"{path} is not the vetted file")
        if st.st_size == 0:
            raise LibavError(EMPTY_FILE, f"file is empty: {path}")
        if max_file_bytes is not None and st.st_size > max_file_bytes:
            raise LibavError(TOO_LARGE, f"file is {st.st_size} bytes, cap is {max_file_bytes}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def open_container(source: Any, formats: str, fmt: str | None = None,
                   notice_estimate: bool = False) -> tuple[Any, bool]:
    """PyAV container on the file object ``source`` with an audio stream: (container,
    estimated). Only ``formats`` demuxers may probe it; ``estimated``: libavformat only guessed
    the duration from the bitrate (a VBR mp3 without a Xing header), told by its own warning."""
    level = av.logging.get_level()
    try:
        if notice_estimate:
            av.logging.set_level(av.logging.WARNING)
        with av.logging.Capture() as said:
            container = av.open(source, mode="r", format=fmt, buffer_size=_IO_BUFFER, options={
                "format_whitelist": formats, "protocol_whitelist": "file"})
    except av.FFmpegError as exc:
        raise LibavError(UNDECODABLE, f"libav cannot open it: {why(exc)}") from None
    finally:
        av.logging.set_level(level)
    if not container.streams.audio:
        container.close()
        raise LibavError(UNDECODABLE, "no audio stream")
    container.streams.audio[0].codec_context.thread_count = 1  # a process per core
    return container, any(_ESTIMATED in str(m) for *_, m in said)


class Part:
    """One container's audio on the track's timeline: from ``offset_s``, ``header_s`` long by
    its own header (None: it has none). A chained Ogg link is opened only while it is read."""

    def __init__(self, offset_s: float, header_s: float | None, container: Any = None,
                 link: tuple[int, int, int] | None = None) -> None:
        self.offset_s, self.header_s = offset_s, header_s
        self.container, self.link = container, link  # link: (fd, start, end) of a chained Ogg

    @property
    def stream(self) -> Any:
        return self.open().streams.audio[0]

    @property
    def origin(self) -> float:
        """Seconds at which the stream's timestamps start (e.g. an mp3's encoder delay)."""
        stream = self.stream
        return float(stream.start_time * stream.time_base) if stream.start_time else 0.0

    def open(self) -> Any:
        if self.container is None:
            assert self.link is not None
            fd, start, end = self.link
            self.container, _ = open_container(LinkFile(fd, start, end), "ogg", fmt="ogg")
        return self.container

    def close(self) -> None:
        """Close a link's container (it reopens on demand); a plain file's stays open."""
        if self.link is not None and self.container is not None:
            self.container.close()
            self.container = None

    def seek(self, seconds: float) -> None:
        """Seek to ``seconds`` after this part's start (a keyframe at or before it)."""
        self.open().seek(int((max(0.0, seconds) + self.origin) * av.time_base), backward=True,
                         any_frame=False)


class Media:
    """An opened file's audio, part after part: one part, or one per chained Ogg link."""

    def __init__(self, parts: list[Part], estimated: bool) -> None:
        self.parts, self.estimated = parts, estimated

    def header(self) -> float | None:
        """The duration the headers claim (all parts'), None if any part has none."""
        total = 0.0
        for part in self.parts:
            if part.header_s is None or not math.isfinite(part.header_s) or part.header_s <= 0:
                return None
            total += part.header_s
        return total

    def frames(self, start_s: float, preroll_s: float) -> Iterator[tuple[Any, Part]]:
        """Decoded frames from ``start_s`` (seeking ``preroll_s`` earlier) to the end of the
        last part, each with its part; bad packets are skipped, up to a limit per part."""
        k = max([i for i, p in enumerate(self.parts) if p.offset_s <= start_s] or [0])
        first = self.parts[k]
        if len(self.parts) > 1:
            first.close()  # a link starts from its first page, whatever was read of it before
        if start_s - first.offset_s > 0:
            first.seek(start_s - first.offset_s - preroll_s)
        for part in self.parts[k:]:
            yield from ((frame, part) for frame in _frames(part.open(), part.stream))
            if len(self.parts) > 1:
                part.close()

    def rewind(self) -> None:
        """Back to the start, for a second read of a plain file (links reopen anyway)."""
        for part in self.parts:
            if part.link is None:
                part.seek(0.0)
            part.close()

    def audio_past(self, end_s: float) -> float:
        """Seconds of packets after ``end_s`` (read, not decoded; stops once past the slack)."""
        last = self.parts[-1]
        at = end_s - last.offset_s + last.origin
        past = 0.0
        try:
            stream = last.stream
            last.open().seek(int(max(0.0, at - TAIL_SECONDS) * av.time_base), backward=True)
            for packet in last.open().demux(stream):
                if packet.pts is None or packet.duration is None:
                    continue
                tail = float((packet.pts + packet.duration) * stream.time_base) - max(
                    at, float(packet.pts * stream.time_base))
                past += max(0.0, tail)
                if past > MISMATCH_SECONDS:
                    break
        except (av.FFmpegError, OverflowError):
            pass  # libav refusing to seek or read there: nothing found past the end
        last.close()
        return past

    def measure(self, cap_s: float) -> float | None:
        """Seconds of audio in all parts, from their packets (no decode), at most ``cap_s``;
        None if no packet could be read (a refusal is "unknown", never an error)."""
        total, found = 0.0, False
        for part in self.parts:
            seconds = _measure(part, cap_s - total)
            part.close()
            if seconds is None:
                continue
            found = True
            total += seconds
            if total >= cap_s:
                return cap_s
        return total if found and total > 0 else None


def _measure(part: Part, cap_s: float) -> float | None:
    end: float | None = None
    try:
        part.seek(0.0)
        origin, stream = part.origin, part.stream
        for packet in part.open().demux(stream):
            if packet.pts is None:
                continue
            ends = float((packet.pts + (packet.duration or 0)) * stream.time_base) - origin
            end = ends if end is None else max(end, ends)
            if end >= cap_s:
                return cap_s
    except (av.FFmpegError, OverflowError):
        pass  # unreadable data after a good start: what was read counts
    return end if end is not None and end > 0 else None


@contextmanager
def opened(req: Request, *, notice_estimate: bool = False) -> Iterator[Media]:
    """``req``'s file checked and opened as :class:`Media` (raises :class:`LibavError`)."""
    with open_checked(req.path, req.max_file_bytes, req.identity) as f:
        container, estimated = open_container(f, req.formats, notice_estimate=notice_estimate)
        parts = [Part(0.0, _header(container), container)]
        try:
            if "ogg" in container.format.name.split(","):
                links = ogg_links(f.fileno(), os.fstat(f.fileno()).st_size)
                chained = _link_parts(f.fileno(), links) if len(links) > 1 else []
                if len(chained) > 1:  # a chain: its links, not the container that stops at one
                    container.close()
                    parts = chained
            yield Media(parts, estimated)
        finally:
            for part in parts:
                if part.container is not None:
                    part.container.close()


def _link_parts(fd: int, links: list[tuple[int, int]]) -> list[Part]:
    """One part per link libav can open, each placed after the ones before it (by its header,
    or measured from its packets when it has none)."""
    parts, at = [], 0.0
    for start, end in links:
        part = Part(at, None, link=(fd, start, end))
        try:
            part.header_s = _header(part.open())
        except LibavError:
            continue  # not a link libav can read (damaged): left out, as the CLI skips it
        length = part.header_s if part.header_s is not None else _measure(part, math.inf)
        part.close()
        parts.append(part)
        at += length or 0.0
    return parts


def _header(container: Any) -> float | None:
    return container.duration / av.time_base if container.duration else None


def _frames(container: Any, stream: Any) -> Iterator:
    """Decoded audio frames; bad packets are skipped (as the CLI does), up to a limit."""
    errors = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:  # unreadable data after a good start: keep what decoded so far
            return
        try:
            yield from packet.decode()
        except av.FFmpegError as exc:
            errors += 1
            if errors > MAX_PACKET_ERRORS:
                raise LibavError(UNDECODABLE,
                                 f"more than {MAX_PACKET_ERRORS} bad packets: {why(exc)}") from None
