"""Audio container sniffing: uploads arrive as bare bytes, and Dify assumed MP3 for all."""

from __future__ import annotations

from gateway.adapters.base import AudioFormat

MP3 = AudioFormat("mp3", "audio/mpeg")
WAV = AudioFormat("wav", "audio/wav")
OGG = AudioFormat("ogg", "audio/ogg")
FLAC = AudioFormat("flac", "audio/flac")
WEBM = AudioFormat("webm", "audio/webm")
M4A = AudioFormat("m4a", "audio/mp4")


def sniff_audio(data: bytes) -> AudioFormat | None:
    """The container of ``data`` from its magic bytes, or None when it is not recognised."""
    if data.startswith(b"ID3"):
        return MP3
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return WAV
    if data.startswith(b"OggS"):
        return OGG
    if data.startswith(b"fLaC"):
        return FLAC
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return WEBM
    if data[4:8] == b"ftyp":
        return M4A
    # A bare MPEG audio frame: 11 sync bits, then a valid version and layer III/II/I.
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0:
        return MP3
    return None
