"""Read TensorFlow V2 checkpoints (``.index`` + ``.data-*``) without TensorFlow.

The format is described in ``docs/metric.md`` §7: the ``.index`` file is
a LevelDB-style SSTable whose entries map tensor names to serialized
``BundleEntryProto`` messages; the ``.data-SSSSS-of-NNNNN`` shards hold the raw
tensor bytes. Every block and every tensor carries a masked CRC32C, and this
reader checks all of them: a truncated, corrupted or foreign file raises
:class:`CheckpointError` naming the file and the fix.

>>> import io  # doctest: +SKIP
>>> ckpt = TFCheckpoint("pre-model/scratch_loss/my_test_model")  # doctest: +SKIP
>>> ckpt["loss_conv_0/weights"].shape  # doctest: +SKIP
(1, 3, 1, 32)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "TFCheckpoint", "TensorEntry", "crc32c", "masked_crc32c"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5
_MASK_DELTA = 0xA282EAD8

# TensorFlow DataType enum -> numpy little-endian dtype.
_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype("<u2"),  # bfloat16 bits, returned raw
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not a TF V2 checkpoint."""


# ---------------------------------------------------------------------------
# CRC32C (Castagnoli)


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: list[int] | None = None


def _crc32c_python(data: bytes) -> int:
    global _TABLE
    if _TABLE is None:
        _TABLE = _make_table()
    table = _TABLE
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``; uses the C implementation of ``google-crc32c`` when present."""
    try:
        import google_crc32c
    except ImportError:  # pragma: no cover - the dependency is declared
        return _crc32c_python(bytes(data))
    return google_crc32c.value(bytes(data))


def masked_crc32c(data: bytes) -> int:
    """The masked CRC that LevelDB and TensorFlow store (rotate right 15, add a constant)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Wire-format helpers


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError(f"{where}: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError(f"{where}: malformed varint")


def _proto_fields(buf: bytes, where: str) -> list[tuple[int, int, object]]:
    """Decode one protobuf message into (field, wire_type, value) triples."""
    fields = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise CheckpointError(f"{where}: truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, where)
            if pos + length > len(buf):
                raise CheckpointError(f"{where}: truncated length-delimited field")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise CheckpointError(f"{where}: truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise CheckpointError(f"{where}: unsupported protobuf wire type {wire}")
        fields.append((field, wire, value))
    return fields


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data shards (a decoded ``BundleEntryProto``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None

    @classmethod
    def parse(cls, name: str, value: bytes, where: str) -> TensorEntry:
        dtype, shape, shard, offset, size, crc = 0, (), 0, 0, 0, None
        for field, wire, v in _proto_fields(value, where):
            if field == 1 and wire == 0:
                dtype = v
            elif field == 2 and wire == 2:
                dims = []
                for f2, w2, dim in _proto_fields(v, where):
                    if f2 == 2 and w2 == 2:
                        size_ = 0
                        for f3, w3, d in _proto_fields(dim, where):
                            if f3 == 1 and w3 == 0:
                                size_ = d
                        dims.append(size_)
                shape = tuple(dims)
            elif field == 3 and wire == 0:
                shard = v
            elif field == 4 and wire == 0:
                offset = v
            elif field == 5 and wire == 0:
                size = v
            elif field == 6 and wire == 5:
                crc = v
            elif field == 7:
                raise CheckpointError(f"{where}: tensor {name!r} is partitioned (slices); not supported")
        return cls(name, dtype, shape, shard, offset, size, crc)


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError(f"{where}: block too short")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise CheckpointError(f"{where}: bad restart array")
    entries = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        vlen, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise CheckpointError(f"{where}: corrupt block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + vlen]))
        pos += vlen
    return entries


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened by its prefix (``P`` of ``P.index``).

    ``names()`` lists the tensors, ``entry(name)`` their metadata and
    ``ckpt[name]`` (or ``read(name)``) returns a numpy array after checking the
    tensor's CRC32C. ``verify()`` checks every tensor.
    """

    def __init__(self, prefix: str | Path):
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise CheckpointError(
                f"{self.index_path}: checkpoint index not found; pass the checkpoint prefix "
                "(the path without '.index'), e.g. pre-model/scratch_loss/my_test_model"
            )
        self._entries: dict[str, TensorEntry] = {}
        self.num_shards = 1
        self.little_endian = True
        self._parse_index(self.index_path.read_bytes())
        self._shards: dict[int, bytes] = {}

    # -- index -------------------------------------------------------------
    def _read_block(self, data: bytes, offset: int, size: int, what: str) -> bytes:
        where = f"{self.index_path}: {what}"
        end = offset + size + _BLOCK_TRAILER_LEN
        if end > len(data) - _FOOTER_LEN:
            raise CheckpointError(f"{where} lies past the end of the file (truncated index?)")
        block = data[offset : offset + size]
        ctype = data[offset + size]
        (stored,) = struct.unpack_from("<I", data, offset + size + 1)
        if masked_crc32c(block + bytes([ctype])) != stored:
            raise CheckpointError(f"{where}: CRC32C mismatch (corrupted file); re-run the set-up step")
        if ctype != 0:
            raise CheckpointError(f"{where}: compressed block (type {ctype}) not supported")
        return block

    def _parse_index(self, data: bytes) -> None:
        p = self.index_path
        if len(data) < _FOOTER_LEN:
            raise CheckpointError(f"{p}: {len(data)} bytes is too short for a TF checkpoint index")
        footer = data[-_FOOTER_LEN:]
        (magic,) = struct.unpack_from("<Q", footer, 40)
        if magic != _MAGIC:
            raise CheckpointError(
                f"{p}: not a TensorFlow V2 checkpoint index (bad magic number); "
                "is it truncated or another kind of file?"
            )
        pos = 0
        _meta_off, pos = _varint(footer, pos, str(p))
        _meta_size, pos = _varint(footer, pos, str(p))
        idx_off, pos = _varint(footer, pos, str(p))
        idx_size, pos = _varint(footer, pos, str(p))
        index_block = self._read_block(data, idx_off, idx_size, "index block")
        header_seen = False
        for _sep, handle in _block_entries(index_block, f"{p}: index block"):
            off, hp = _varint(handle, 0, str(p))
            size, _ = _varint(handle, hp, str(p))
            block = self._read_block(data, off, size, f"data block at {off}")
            for key, value in _block_entries(block, f"{p}: data block at {off}"):
                if key == b"":
                    header_seen = True
                    for field, wire, v in _proto_fields(value, f"{p}: header"):
                        if field == 1 and wire == 0:
                            self.num_shards = v
                        elif field == 2 and wire == 0:
                            self.little_endian = v == 0
                    continue
                name = key.decode("utf-8")
                self._entries[name] = TensorEntry.parse(name, value, f"{p}: entry {name!r}")
        if not header_seen:
            raise CheckpointError(f"{p}: no bundle header entry; not a TF V2 checkpoint")

    # -- data --------------------------------------------------------------
    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            path = self.shard_path(shard_id)
            if not path.is_file():
                raise CheckpointError(f"{path}: data shard missing; re-run the set-up step")
            self._shards[shard_id] = path.read_bytes()
        return self._shards[shard_id]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> TensorEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.prefix}: no tensor named {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        e = self.entry(name)
        if e.dtype not in _DTYPES:
            raise CheckpointError(f"{self.prefix}: tensor {name!r} has unsupported dtype {e.dtype}")
        shard = self._shard(e.shard_id)
        path = self.shard_path(e.shard_id)
        if e.offset + e.size > len(shard):
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {e.offset + e.size} but the file has "
                f"{len(shard)} bytes (truncated); re-run the set-up step"
            )
        raw = shard[e.offset : e.offset + e.size]
        if e.crc32c is not None and masked_crc32c(raw) != e.crc32c:
            raise CheckpointError(
                f"{path}: CRC32C mismatch for tensor {name!r} (corrupted file); re-run the set-up step"
            )
        dtype = _DTYPES[e.dtype]
        if not self.little_endian:
            dtype = dtype.newbyteorder(">")
        count = int(np.prod(e.shape)) if e.shape else 1
        if count * dtype.itemsize != e.size:
            raise CheckpointError(f"{self.prefix}: tensor {name!r}: size {e.size} does not match shape {e.shape}")
        return np.frombuffer(raw, dtype=dtype).reshape(e.shape).astype(dtype.newbyteorder("="))

    __getitem__ = read

    def verify(self) -> int:
        """Read every tensor, checking its CRC; returns the number of tensors checked."""
        for name in self._entries:
            self.read(name)
        return len(self._entries)
