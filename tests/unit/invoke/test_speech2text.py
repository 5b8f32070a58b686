"""gateway.invoke.speech2text: the daemon's hex-encoded audio."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.invoke.speech2text import decode_hex_audio


def test_decode_hex_audio() -> None:
    assert decode_hex_audio("4944330300") == b"ID3\x03\x00"
    assert decode_hex_audio("FFFB") == b"\xff\xfb"
    for bad, why in [("", "empty"), ("abc", "odd length"), ("zz", "non-hex")]:
        with pytest.raises(BadRequest, match=why):
            decode_hex_audio(bad)
