"""Record batches the consumer cannot read become one parked record, never an exception in poll().

kafka-python inflates a compressed batch inside ``poll()``; a batch it cannot read (a gzip
payload that is not deflate data, a codec it lacks, a bad CRC, records that do not parse)
raises there, before the worker sees any record, so the worker would exit and the partition
would stay blocked for good. And it inflates the whole batch before any size check: a few
hundred KiB of gzip can become gigabytes.

:func:`install_batch_guard` makes the consumer read v2 batches through :class:`GuardedRecordBatch`:
decompression stops at ``max_inflated_bytes`` (checked while inflating, per codec), and any
batch that fails yields one record at its last offset whose value is an :class:`UnreadableBatch`
naming the offsets and the cause. The worker dead-letters that record by its coordinates and
commits past it, so the offset moves on. Records read before a failure mid-batch are kept.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import ClassVar

import kafka.record.memory_records as memory_records
from kafka.record.default_records import DefaultRecord, DefaultRecordBatch

#: Compression codec ids of the record batch attributes, by name (for messages).
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_BYTES = 16
_READ_CHUNK = 256 * 1024


class UnreadableBatch:
    """The value of the record that stands for a batch the client could not read.

    Not bytes, so nothing mistakes it for a message; ``len()`` is 0 (the fetcher measures
    values). ``str()`` is the one-line reason, for the dead letter's detail.
    """

    __slots__ = ("detail", "first_offset", "last_offset")

    def __init__(self, first_offset: int, last_offset: int, detail: str) -> None:
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.detail = detail

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        return (f"record batch at offsets {self.first_offset}-{self.last_offset} could not be "
                f"read, so it was skipped: {self.detail}")

    def __repr__(self) -> str:
        return f"UnreadableBatch({self})"


class BatchTooLarge(ValueError):
    """A batch inflates beyond the cap: refused while inflating, before it is all in memory."""


def _gzip(data: memoryview, cap: int) -> bytes:
    """gzip (several members allowed), at most ``cap`` bytes out."""
    out = bytearray()
    rest = bytes(data)
    while rest:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        out += inflater.decompress(rest, cap + 1 - len(out))
        if len(out) > cap:
            raise BatchTooLarge(f"inflates beyond {cap} bytes")
        if not inflater.eof:
            if inflater.unconsumed_tail:
                raise BatchTooLarge(f"inflates beyond {cap} bytes")
            raise zlib.error("gzip data ends early")
        rest = inflater.unused_data
    return bytes(out)


def _snappy_length(block: bytes) -> int:
    """The uncompressed length a raw snappy block declares (its leading varint)."""
    length = shift = 0
    for i, byte in enumerate(block[:5]):
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length
        shift += 7 if i < 4 else 0
    raise ValueError("snappy block has no valid length")


def _snappy(data: memoryview, cap: int) -> bytes:
    """Raw or xerial-framed snappy; every block's declared size is checked before inflating."""
    import snappy

    raw = data.tobytes()
    if not raw.startswith(_XERIAL_MAGIC):
        blocks = [raw]
    else:
        blocks, pos = [], _XERIAL_HEADER_BYTES
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise ValueError("xerial snappy frame ends early")
            (size,) = struct.unpack_from(">i", raw, pos)
            if size < 0 or pos + 4 + size > len(raw):
                raise ValueError("xerial snappy block length out of range")
            blocks.append(raw[pos + 4: pos + 4 + size])
            pos += 4 + size
    if sum(_snappy_length(b) for b in blocks) > cap:
        raise BatchTooLarge(f"inflates beyond {cap} bytes")
    return b"".join(snappy.decompress(b) for b in blocks)


def _lz4(data: memoryview, cap: int) -> bytes:
    import lz4.frame

    inflater = lz4.frame.LZ4FrameDecompressor()
    out = inflater.decompress(data.tobytes(), max_length=cap + 1)
    if len(out) > cap or (not inflater.eof and not inflater.needs_input):
        raise BatchTooLarge(f"inflates beyond {cap} bytes")
    if not inflater.eof:
        raise ValueError("lz4 frame ends early")
    return out


def _zstd(data: memoryview, cap: int) -> bytes:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(data.tobytes(), read_across_frames=True)
    out = bytearray()
    while True:
        chunk = reader.read(min(_READ_CHUNK, cap + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > cap:
            raise BatchTooLarge(f"inflates beyond {cap} bytes")


_INFLATE = {1: _gzip, 2: _snappy, 3: _lz4, 4: _zstd}


class GuardedRecordBatch(DefaultRecordBatch):
    """A v2 record batch that inflates within a cap and turns any read failure into one
    :class:`UnreadableBatch` record at its last offset (see the module docstring)."""

    #: Most bytes one batch may inflate to (set by :func:`install_batch_guard`).
    max_inflated_bytes: ClassVar[int] = 0

    def __init__(self, buffer: bytes) -> None:
        super().__init__(buffer)
        self.unreadable: str | None = None

    def validate_crc(self) -> bool:
        """A CRC mismatch parks the batch instead of raising in the fetcher."""
        if not super().validate_crc():
            self.unreadable = "CRC mismatch (the batch was damaged)"
        return True

    def _maybe_uncompress(self) -> None:
        if self._decompressed:
            return
        codec = self.compression_type
        if codec != self.CODEC_NONE:
            inflate = _INFLATE.get(codec)
            if inflate is None:
                raise ValueError(f"unknown compression codec {codec}")
            cap = self.max_inflated_bytes
            self._buffer = bytearray(inflate(memoryview(self._buffer)[self._pos:], cap))
            self._pos = 0
        self._decompressed = True

    def __iter__(self) -> Iterator[DefaultRecord]:  # type: ignore[override]
        if self.unreadable is None:
            try:
                self._maybe_uncompress()
                while True:
                    try:
                        yield DefaultRecordBatch.__next__(self)
                    except StopIteration:
                        return
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, park them, never raise
                self.unreadable = (f"{CODEC_NAMES.get(self.compression_type, 'unknown')} batch: "
                                   f"{type(exc).__name__}: {str(exc)[:300]}")
        yield self._parked_record()

    def _parked_record(self) -> DefaultRecord:
        value = UnreadableBatch(self.base_offset, self.last_offset, self.unreadable or "")
        return DefaultRecord(0, self.last_offset, self.first_timestamp, self.timestamp_type,
                             None, value, [])


def install_batch_guard(max_inflated_bytes: int) -> None:
    """Make every consumer of this process read v2 record batches through
    :class:`GuardedRecordBatch`, inflating at most ``max_inflated_bytes`` per batch.

    Process-wide (kafka-python picks the batch class by name in ``memory_records``); the cap is
    the largest any caller asked for, so one consumer never shrinks another's.
    """
    current = GuardedRecordBatch.max_inflated_bytes
    if memory_records.DefaultRecordBatch is GuardedRecordBatch:
        GuardedRecordBatch.max_inflated_bytes = max(current, max_inflated_bytes)
    else:
        GuardedRecordBatch.max_inflated_bytes = max_inflated_bytes
        memory_records.DefaultRecordBatch = GuardedRecordBatch
