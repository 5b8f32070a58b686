"""gateway.adapters.litellm_speech: the MIME type of synthesised audio."""

from __future__ import annotations

from gateway.adapters.litellm_speech import mime_type


def test_speech_mime_types() -> None:
    assert mime_type("mp3", "audio/mpeg") == "audio/mpeg"
    assert mime_type("opus", "audio/mpeg") == "audio/ogg"
    assert mime_type("WAV", None) == "audio/wav"
    assert mime_type("ulaw", "audio/basic; rate=8000") == "audio/basic"
    assert mime_type("ulaw", "text/html") == "application/octet-stream"
