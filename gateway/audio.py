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


# MPEG-1 Layer III bit rates (kbit/s) by the header's 4-bit index; MPEG-2/2.5 use the second row.
_MP3_KBPS = (
    (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
)
_SCAN_BYTES = 64 * 1024  # how far into the data a header is looked for


def audio_seconds(data: bytes) -> float | None:
    """How long the audio lasts, from its header (WAV, FLAC; MP3 from its first frame's bit
    rate, exact for constant bit rate), for the usage ledger; None when the header does not say."""
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return _wav_seconds(data)
        if data[:4] == b"fLaC" and len(data) >= 26:
            fields = int.from_bytes(data[18:26], "big")
            rate, samples = fields >> 44, fields & ((1 << 36) - 1)
            return samples / rate if rate and samples else None
        return _mp3_seconds(data)
    except (IndexError, ValueError, ZeroDivisionError):
        return None


def _wav_seconds(data: bytes) -> float | None:
    offset, byte_rate = 12, 0
    for _ in range(64):
        if offset + 8 > len(data):
            return None
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk == b"fmt " and body + 12 <= len(data):
            byte_rate = int.from_bytes(data[body + 8 : body + 12], "little")
        elif chunk == b"data":
            return min(size, len(data) - body) / byte_rate if byte_rate else None
        offset = body + size + (size & 1)
    return None


def _mp3_seconds(data: bytes) -> float | None:
    start = 0
    if data.startswith(b"ID3") and len(data) >= 10:  # skip the tag: its size is 4 x 7 bits
        start = 10 + int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big")
    end = min(len(data) - 3, start + _SCAN_BYTES)
    for at in range(start, max(end, start)):
        if data[at] != 0xFF or (data[at + 1] & 0xE0) != 0xE0:
            continue
        version, layer = (data[at + 1] >> 3) & 0x3, (data[at + 1] >> 1) & 0x3
        if version == 1 or layer != 1:  # reserved version, or not Layer III
            continue
        kbps = _MP3_KBPS[0 if version == 3 else 1][data[at + 2] >> 4]
        if kbps:
            return (len(data) - at) * 8 / (kbps * 1000)
    return None
