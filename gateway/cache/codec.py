"""Cached vectors as compact bytes: a small header, a checksum, then float32 values.

    offset 0  2 bytes  magic b"\\xe5\\x01" (format version 1)
    offset 2  4 bytes  dimensions, uint32 little-endian
    offset 6  4 bytes  CRC-32 of the float bytes
    offset 10 4*dims   float32 little-endian

A value that fails any check decodes to None, so a corrupt or foreign entry is a miss,
never a wrong vector. float32 is the precision embedding models compute in.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

MAGIC = b"\xe5\x01"
_HEADER = struct.Struct("<2sII")
HEADER_SIZE = _HEADER.size
FLOAT32 = np.dtype("<f4")

Vector = npt.NDArray[np.float32]


def encode_vector(vector: Vector) -> bytes:
    body = np.ascontiguousarray(vector, dtype=FLOAT32).tobytes()
    return _HEADER.pack(MAGIC, len(body) // 4, zlib.crc32(body)) + body


def decode_vector(value: bytes) -> Vector | None:
    if len(value) <= HEADER_SIZE:
        return None
    magic, dims, crc = _HEADER.unpack_from(value)
    if magic != MAGIC or len(value) - HEADER_SIZE != 4 * dims:
        return None
    body = memoryview(value)[HEADER_SIZE:]
    if zlib.crc32(body) != crc:
        return None
    return np.frombuffer(body, dtype=FLOAT32)
