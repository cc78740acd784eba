"""Read a TensorFlow checkpoint (V2 tensor bundle) with numpy alone, no TensorFlow.

A bundle is ``<prefix>.index`` — a LevelDB-format table mapping each variable name to a
``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c) — plus ``<prefix>.data-*``
shards holding the raw little-endian tensor bytes. Only what TF 1.x/2.x write for plain
variables is supported (uncompressed table blocks, unsliced tensors); anything else is a clear
:class:`CheckpointError`, never a guess. The table and proto layouts are documented in
TensorFlow's ``tensorflow/core/util/tensor_bundle/tensor_bundle.proto`` and LevelDB's
``table_format.md``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from genretag.core.errors import FatalError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
#: TF ``DataType`` enum values of the dtypes a plain checkpoint holds.
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 19: np.float16}
#: Upper bound on one tensor (bytes): a corrupt entry never makes us allocate without limit.
MAX_TENSOR_BYTES = 1 << 30


class CheckpointError(FatalError):
    """The checkpoint is missing, truncated, corrupt, or uses a feature this reader lacks."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError("truncated or malformed varint in checkpoint index")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block_entries(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one table block (prefix-compressed keys, restart array at the end)."""
    if offset + size + 5 > len(data):
        raise CheckpointError("checkpoint index block lies past the end of the file")
    if data[offset + size] != 0:
        raise CheckpointError("compressed checkpoint index blocks are not supported")
    block = data[offset: offset + size]
    (n_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * n_restarts
    if end < 0:
        raise CheckpointError("corrupt checkpoint index block (restart array)")
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise CheckpointError("corrupt checkpoint index entry")
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        entries.append((key, block[pos: pos + value_len]))
        pos += value_len
    return entries


def _fields(msg: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message (varint/len/fixed)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(msg):
        tag, pos = _varint(msg, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(msg, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(msg, pos)
            out.append((number, msg[pos: pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, struct.unpack_from("<I", msg, pos)[0]))
            pos += 4
        elif wire == 1:
            out.append((number, struct.unpack_from("<Q", msg, pos)[0]))
            pos += 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} in checkpoint index")
    return out


def _entry(name: str, value: bytes) -> dict[str, object]:
    """Decode a ``BundleEntryProto``: dtype=1, shape=2, shard_id=3, offset=4, size=5, slices=7."""
    entry: dict[str, object] = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0}
    for number, val in _fields(value):
        if number == 1:
            entry["dtype"] = val
        elif number == 2:
            dims = []
            for n, dim in _fields(val):  # TensorShapeProto: dim=2 {size=1}
                if n == 2:
                    dims.append(dict(_fields(dim)).get(1, 0))
            entry["shape"] = dims
        elif number in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[number]] = val
        elif number == 7:
            raise CheckpointError(f"{name}: sliced (partitioned) variables are not supported")
    return entry


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """All tensors of the bundle at ``prefix`` (``prefix + '.index'`` must exist), by name."""
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    try:
        index = index_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint index {index_path}: {exc}") from exc
    if len(index) < _FOOTER_LEN:
        raise CheckpointError(f"{index_path}: too short to be a checkpoint index")
    footer = index[-_FOOTER_LEN:]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise CheckpointError(f"{index_path}: not a TensorFlow checkpoint index (bad magic)")
    _, pos = _varint(footer, 0)  # metaindex handle: offset, size (unused)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries: dict[str, dict[str, object]] = {}
    for _, handle in _block_entries(index, index_offset, index_size):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(index, off, size):
            if key:  # the empty key holds the BundleHeaderProto
                name = key.decode()
                entries[name] = _entry(name, value)
    return {name: _load(prefix, name, e) for name, e in sorted(entries.items())}


def _load(prefix: str, name: str, entry: dict[str, object]) -> np.ndarray:
    dtype = _DTYPES.get(int(entry["dtype"]))  # type: ignore[arg-type]
    if dtype is None:
        raise CheckpointError(f"{name}: unsupported dtype enum {entry['dtype']}")
    shape = tuple(int(d) for d in entry["shape"])  # type: ignore[union-attr]
    size, offset = int(entry["size"]), int(entry["offset"])  # type: ignore[arg-type]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if size != expected or size > MAX_TENSOR_BYTES:
        raise CheckpointError(
            f"{name}: {size} bytes stored for shape {shape} ({expected} expected)")
    shard = Path(f"{prefix}.data-{int(entry['shard']):05d}-of-")  # type: ignore[arg-type]
    matches = sorted(shard.parent.glob(shard.name + "*"))
    if not matches:
        raise CheckpointError(f"{name}: data shard {shard.name}* not found")
    with open(matches[0], "rb") as fh:
        fh.seek(offset)
        raw = fh.read(size)
    if len(raw) != size:
        raise CheckpointError(f"{name}: data shard {matches[0]} is truncated")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()
