"""The ``{"data": ..., "error": ...}`` envelope around every reply (spec 2.3).

Stream error frames must carry ``"data": null``: the daemon validates the whole frame
before it looks at ``error`` and silently drops ``{"data": {}, "error": "..."}`` (spec 11.1).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.framing import encode_frame

_FRAME_TAIL = b"\n\n"  # Dify writes it inside each frame; the daemon tolerates it.


def ok_body(data: Any) -> bytes:
    """A unary reply body carrying ``data`` (numpy arrays become JSON arrays: float32
    vectors are written in their shortest exact form, about half the text of float64)."""
    return orjson.dumps({"data": data, "error": ""}, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """A unary or pre-stream error body."""
    return orjson.dumps({"data": None, "error": message})


def data_frame(data: Any) -> bytes:
    """One stream frame carrying ``data``."""
    return encode_frame(orjson.dumps({"data": data, "error": ""}) + _FRAME_TAIL)


def error_frame(message: str) -> bytes:
    """The final frame of a stream that failed after it started."""
    return encode_frame(orjson.dumps({"data": None, "error": message}) + _FRAME_TAIL)
