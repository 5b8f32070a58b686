"""Length-prefixed frames, the daemon's stream format (spec 2.5).

A frame is a 14-byte header followed by the payload::

    offset size value
    0      1    magic 0x0F
    1      1    reserved, 0
    2      2    header length, uint16 little-endian, always 10
    4      4    payload length N, uint32 little-endian
    8      6    reserved, zeros
    14     N    payload (a JSON envelope)

Bytes in, bytes out: no JSON and no business logic here.
"""

from __future__ import annotations

import struct

MAGIC = 0x0F
HEADER_SIZE = 14
# The daemon's RESPONSE_MAX_BUFFER_SIZE default (30 MiB); larger frames are rejected there.
DAEMON_MAX_PAYLOAD = 31_457_280

_HEADER = struct.Struct("<BBHI6x")


class FrameDecodeError(ValueError):
    """The byte stream is not a valid sequence of frames."""


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with the frame header."""
    return _HEADER.pack(MAGIC, 0, 10, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder with the daemon's rules, for tests and tools.

    ``feed`` accepts arbitrary splits of the stream and returns each complete payload;
    ``close`` fails on a partial frame, as the daemon does on a short read.
    """

    def __init__(self, max_payload: int = DAEMON_MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        payloads: list[bytes] = []
        while len(self._buffer) >= 4:
            if self._buffer[0] != MAGIC:
                raise FrameDecodeError("magic number mismatch")
            if int.from_bytes(self._buffer[2:4], "little") != 10:
                raise FrameDecodeError("header length mismatch")
            if len(self._buffer) < HEADER_SIZE:
                break
            length = int.from_bytes(self._buffer[4:8], "little")
            if length > self._max_payload:
                raise FrameDecodeError("data length is too long")
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            payloads.append(bytes(self._buffer[HEADER_SIZE:end]))
            del self._buffer[:end]
        return payloads

    def close(self) -> None:
        if self._buffer:
            raise FrameDecodeError(f"stream ended inside a frame ({len(self._buffer)} bytes left)")


def decode_frames(data: bytes, max_payload: int = DAEMON_MAX_PAYLOAD) -> list[bytes]:
    """Split a whole stream body into frame payloads."""
    decoder = FrameDecoder(max_payload)
    payloads = decoder.feed(data)
    decoder.close()
    return payloads
