"""The links of a chained Ogg file, found from its page headers, each readable on its own.

A chained Ogg file is several Ogg streams one after another (joined radio recordings, podcasts
cut together): each link starts with a beginning-of-stream page and may have its own rate and
channels. libavformat (8.x, in PyAV) refuses to go on past a link whose parameters change
("patches welcome"), where the FFmpeg command line reconfigures and decodes to the end; so the
libav backend opens each link as a container of its own (:class:`LinkFile`, a byte range of the
vetted descriptor) and decodes them in order.

Only page headers are read (27 bytes and the segment table per page, bodies skipped), so the scan
costs a few reads per 4 KiB page; at most :data:`MAX_LINKS` links are told apart (the rest of a
file with more stays in the last one, where libav stops at the next change, as before).
"""

from __future__ import annotations

import os

#: Links told apart at most: bounds the containers a file can make a decoder process open.
MAX_LINKS = 256
_CAPTURE = b"OggS\x00"  # capture pattern and stream structure version 0
_HEADER = 27  # bytes of a page header before its segment table
_BOS = 0x02  # header type flag: first page of a logical stream
_RESYNC_BLOCK = 1 << 16


def ogg_links(fd: int, size: int, max_links: int = MAX_LINKS) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of the links of the Ogg file open on ``fd``, in order.

    A link starts at a beginning-of-stream page that follows pages that are not (a group of
    streams multiplexed at the start is one link). Damaged data between pages is skipped to the
    next capture pattern, as libavformat does. One range covering the file if it is not chained.
    """
    starts = [0]
    pos, previous_bos = 0, True
    while pos + _HEADER <= size and len(starts) < max_links:
        head = os.pread(fd, _HEADER, pos)
        if len(head) < _HEADER:
            break
        if not head.startswith(_CAPTURE):
            found = _next_capture(fd, pos + 1, size)
            if found is None:
                break
            pos = found
            continue
        segments = head[26]
        table = os.pread(fd, segments, pos + _HEADER)
        if len(table) < segments:
            break
        bos = bool(head[5] & _BOS)
        if bos and not previous_bos:
            starts.append(pos)
        previous_bos = bos
        pos += _HEADER + segments + sum(table)
    return list(zip(starts, [*starts[1:], size], strict=True))


def _next_capture(fd: int, pos: int, size: int) -> int | None:
    """Offset of the next capture pattern at or after ``pos``, or None."""
    while pos < size:
        block = os.pread(fd, _RESYNC_BLOCK + len(_CAPTURE), pos)
        at = block.find(_CAPTURE)
        if at >= 0:
            return pos + at
        if len(block) <= len(_CAPTURE):
            return None
        pos += _RESYNC_BLOCK
    return None


class LinkFile:
    """Bytes ``[start, end)`` of the file open on ``fd``, as the read-only file object PyAV
    reads (positional reads: links of one file never move each other's position)."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.start, self.size, self.pos = fd, start, end - start, 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        data = os.pread(self.fd, n, self.start + self.pos) if n > 0 else b""
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, min(base + offset, self.size))
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
