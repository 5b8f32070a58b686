"""Reading replies under load: the daemon's length-prefixed frames, and OpenAI's SSE.

The frame reader is the daemon-exact one from ``tests/support/daemon.py`` when this runs in
a checkout with the tests; elsewhere a minimal reader with the same rules (magic ``0x0F``,
header length 10, payload at most 30 MiB, a clean end only at a frame boundary).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["FrameError", "FrameReader", "SseReader", "count_at", "envelope_error"]

MAX_FRAME = 31_457_280

try:
    from tests.support.daemon import FrameError, FrameReader
except ImportError:  # no tests/ beside bench/ (a copy of bench/ on an operator's machine)

    class FrameError(Exception):  # type: ignore[no-redef]
        pass

    class FrameReader:  # type: ignore[no-redef]
        def __init__(self, max_size: int = MAX_FRAME) -> None:
            self._buf = bytearray()
            self._max = max_size

        def feed(self, data: bytes) -> list[bytes]:
            self._buf += data
            frames: list[bytes] = []
            buf, pos = self._buf, 0
            while len(buf) - pos >= 4:
                if buf[pos] != 0x0F:
                    raise FrameError(f"magic number mismatch: {buf[pos]}")
                if int.from_bytes(buf[pos + 2 : pos + 4], "little") != 0x0A:
                    raise FrameError("header length mismatch")
                if len(buf) - pos < 14:
                    break
                length = int.from_bytes(buf[pos + 4 : pos + 8], "little")
                if length > self._max:
                    raise FrameError(f"data length is too long: {length}")
                if len(buf) - pos - 14 < length:
                    break
                frames.append(bytes(buf[pos + 14 : pos + 14 + length]))
                pos += 14 + length
            del buf[:pos]
            return frames

        def close(self) -> None:
            if self._buf:
                raise FrameError("the body ended inside a frame")


class SseReader:
    """``data:`` payloads of an OpenAI-style event stream, ``[DONE]`` excluded (``done`` is set)."""

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        events: list[bytes] = []
        while (end := self._buf.find(b"\n\n")) >= 0:
            event, self._buf = self._buf[:end], self._buf[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        self.done = True
                    else:
                        events.append(payload)
        return events


def envelope_error(payload: bytes) -> str | None:
    """Why the daemon would fail on this envelope (its ``error``, or ``data`` null), else None."""
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "reply is not JSON"
    if not isinstance(envelope, dict):
        return "reply is not a JSON object"
    if envelope.get("error"):
        return f"error: {str(envelope['error'])[:200]}"
    if envelope.get("data") is None:
        return "data is nil"
    return None


def count_at(value: Any, path: list[str]) -> int | None:
    """len() of the list found by following ``path`` into ``value``, or None."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return len(value) if isinstance(value, list) else None
