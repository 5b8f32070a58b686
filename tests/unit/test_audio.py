"""gateway.audio: the audio format told by the first bytes."""

from __future__ import annotations

import pytest

from gateway.audio import FLAC, M4A, MP3, OGG, WAV, WEBM, sniff_audio


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x03\x00\x00", MP3),
        (b"\xff\xfb\x90\x64", MP3),
        (b"\xff\xf3\x80\xc4", MP3),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", WAV),
        (b"OggS\x00\x02", OGG),
        (b"fLaC\x00\x00", FLAC),
        (b"\x1a\x45\xdf\xa3\x9f", WEBM),
        (b"\x00\x00\x00\x20ftypM4A ", M4A),
        (b"\xff\xf1\x50\x80", None),  # AAC ADTS: not MPEG layer III
        (b"hello world", None),
        (b"", None),
    ],
)
def test_sniff_audio(head: bytes, expected: object) -> None:
    assert sniff_audio(head) == expected
